//! Phone numbers as people write them, stored as E.164.
//!
//! `+1 (555) 123-4567`, `+44 20 7946 0958` or, with a tenant's default region of FR,
//! `06 12 34 56 78` are read by libphonenumber's rules (the `phonenumber` crate) and stored
//! as `+15551234567`, `+442079460958`, `+33612345678`, so that one person written two ways
//! is one recipient. A number must have a country calling code that exists and a length its
//! country's numbers can have; whether the number is assigned today is the provider's to say
//! (tests and fiction use the unassigned 555 numbers, which must still be accepted).

use crate::validate::clip;
use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, PhoneNumber};

/// Longer input is not a phone number, and is not handed to the parser.
const MAX_INPUT: usize = 64;

/// A tenant's default region: an ISO 3166-1 alpha-2 code the phone metadata knows (`FR`).
pub fn region(code: &str) -> Result<Id, String> {
    code.parse::<Id>()
        .ok()
        .filter(|id| DATABASE.by_id(id.as_ref()).is_some())
        .ok_or_else(|| {
            format!(
                "`{}` is not a region code (two capital letters, ISO 3166-1, like FR or US)",
                clip(code)
            )
        })
}

/// Every region code [`region`] accepts, in order (for the API's document).
pub fn regions() -> Vec<String> {
    let letters = || b'A'..=b'Z';
    letters()
        .flat_map(|a| letters().map(move |b| String::from_utf8_lossy(&[a, b]).into_owned()))
        .filter(|code| region(code).is_ok())
        .collect()
}

/// What a list's address filter `text` may be stored as: itself, and, when it reads as a
/// phone number, that number in E.164 as uploads store it: with its country code
/// (`+33 6 12 34 56 78`, `0033612345678`) as written, without one (`06 12 34 56 78`) as a
/// number of each of `regions` (the default regions of the tenants the list shows, as
/// their uploads read it). A filter is not an upload: text that is no phone number (another
/// channel's address) is looked for as written, not refused. Empty: no filter.
pub fn filter_forms(text: Option<&str>, regions: &[Id]) -> Vec<String> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Vec::new();
    };
    let mut forms = vec![text.to_owned()];
    let readings = match normalize(text, None) {
        Ok(number) => vec![number],
        Err(_) => regions
            .iter()
            .filter_map(|region| normalize(text, Some(*region)).ok())
            .collect(),
    };
    for number in readings {
        if !forms.contains(&number) {
            forms.push(number);
        }
    }
    forms
}

/// Whether [`filter_forms`] would read `text` differently with tenants' regions: it is
/// there and has no country code (so a caller looks the regions up only then).
pub fn filter_wants_regions(text: Option<&str>) -> bool {
    text.map(str::trim)
        .is_some_and(|t| !t.is_empty() && normalize(t, None).is_err())
}

/// `text` in E.164, or why it is not a phone number. Numbers without a country code are
/// read as numbers of `region`, and refused without one.
pub fn normalize(text: &str, region: Option<Id>) -> Result<String, String> {
    let text = text.trim();
    // Already E.164, as almost every upload writes it: checked without the parser.
    if let Some(digits) = text.strip_prefix('+')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return e164(text, digits).map(|()| text.to_owned());
    }
    if text.len() > MAX_INPUT {
        return Err(format!("`{}` is not a phone number", clip(text)));
    }
    // `00` is the international prefix almost everywhere: without a region to say
    // otherwise, it stands for `+`.
    let owned;
    let text = match text.strip_prefix("00") {
        Some(rest) if region.is_none() => {
            owned = format!("+{rest}");
            owned.as_str()
        }
        _ => text,
    };
    let international = text.starts_with('+') || text.starts_with("00");
    if !international && region.is_none() {
        return Err(format!(
            "`{}` has no country code: write it as +<country code><number>, or set the \
             tenant's default_region",
            clip(text)
        ));
    }
    let number = phonenumber::parse(region, text)
        .map_err(|e| format!("`{}` is not a phone number ({e})", clip(text)))?;
    if number.extension().is_some() {
        return Err(format!(
            "`{}` has an extension, which cannot receive messages",
            clip(text)
        ));
    }
    let formatted = formatted(&number);
    let digits = formatted.strip_prefix('+').unwrap_or(&formatted);
    e164(&formatted, digits)
        .map(|()| formatted.clone())
        .map_err(|reason| format!("`{}` {reason}", clip(text)))
}

fn formatted(number: &PhoneNumber) -> String {
    number.format().mode(Mode::E164).to_string()
}

/// The checks on an E.164 number's digits: at most 15, not starting with 0, a country
/// calling code that exists, and a national number of a length that country uses.
fn e164(number: &str, digits: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("`{}` is not a phone number: {why}", clip(number)));
    if digits.len() > 15 {
        return refuse("more than 15 digits");
    }
    if digits.starts_with('0') {
        return refuse("a country code never starts with 0");
    }
    // Country codes are prefix-free: the first 1 to 3 digits that are one, are it.
    let Some((code, national)) = (1..=3.min(digits.len())).find_map(|n| {
        let code: u16 = digits[..n].parse().ok()?;
        DATABASE.by_code(&code).map(|metas| (metas, &digits[n..]))
    }) else {
        return refuse("no country has this country code");
    };
    // The lengths of the country's kinds of numbers you can dial from abroad (short codes
    // and emergency numbers are not recipients), as libphonenumber's general ones are.
    let lengths: Vec<u16> = code
        .iter()
        .flat_map(|meta| {
            let d = meta.descriptors();
            [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.personal_number(),
                d.voip(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ]
        })
        .flatten()
        .flat_map(|descriptor| descriptor.possible_length().iter().copied())
        .collect();
    let length = u16::try_from(national.len()).unwrap_or(u16::MAX);
    if national.is_empty() || (!lengths.is_empty() && !lengths.contains(&length)) {
        return refuse("the number has the wrong length for its country");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr() -> Option<Id> {
        Some(Id::FR)
    }

    #[test]
    fn a_filter_finds_a_number_however_it_is_written() {
        assert_eq!(
            filter_forms(Some(" +33 6 12 34 56 78 "), &[]),
            ["+33 6 12 34 56 78", "+33612345678"]
        );
        assert_eq!(filter_forms(Some("+33612345678"), &[]), ["+33612345678"]);
        // Not a phone number: looked for as written, never refused.
        assert_eq!(
            filter_forms(Some("user@example.com"), &[Id::FR]),
            ["user@example.com"]
        );
        assert_eq!(filter_forms(Some("0612345678"), &[]), ["0612345678"]);
        assert!(filter_forms(Some("  "), &[Id::FR]).is_empty());
        assert!(filter_forms(None, &[]).is_empty());
    }

    #[test]
    fn a_filter_without_a_country_code_is_read_in_the_tenants_regions() {
        assert_eq!(
            filter_forms(Some("06 12 34 56 78"), &[Id::FR]),
            ["06 12 34 56 78", "+33612345678"]
        );
        // One reading a region that can read it, none twice.
        assert_eq!(
            filter_forms(Some("(555) 123-4567"), &[Id::US, Id::FR, Id::CA]),
            ["(555) 123-4567", "+15551234567"]
        );
        // A country code wins over every region.
        assert_eq!(
            filter_forms(Some("+44 20 7946 0958"), &[Id::FR]),
            ["+44 20 7946 0958", "+442079460958"]
        );
        assert!(filter_wants_regions(Some(" 06 12 34 56 78 ")));
        assert!(!filter_wants_regions(Some("+33612345678")));
        assert!(!filter_wants_regions(Some(" ")));
        assert!(!filter_wants_regions(None));
    }

    #[test]
    fn numbers_as_people_write_them_become_e164() {
        assert_eq!(
            normalize("+1 (555) 123-4567", None).unwrap(),
            "+15551234567"
        );
        assert_eq!(normalize("+15551234567", None).unwrap(), "+15551234567");
        assert_eq!(
            normalize(" +44 20 7946 0958 ", None).unwrap(),
            "+442079460958"
        );
        assert_eq!(
            normalize("0044 20 7946 0958", None).unwrap(),
            "+442079460958"
        );
        assert_eq!(
            normalize("+33 6 12 34 56 78", None).unwrap(),
            "+33612345678"
        );
        assert_eq!(
            normalize("+33 (0)6 12 34 56 78", None).unwrap(),
            "+33612345678"
        );
    }

    #[test]
    fn a_default_region_reads_national_numbers() {
        assert_eq!(normalize("06 12 34 56 78", fr()).unwrap(), "+33612345678");
        assert_eq!(normalize("06.12.34.56.78", fr()).unwrap(), "+33612345678");
        // A number with its country code is read as written, whatever the region.
        assert_eq!(normalize("+1 555 123 4567", fr()).unwrap(), "+15551234567");
        assert_eq!(
            normalize("(555) 123-4567", Some(Id::US)).unwrap(),
            "+15551234567"
        );
        let without = normalize("06 12 34 56 78", None).unwrap_err();
        assert!(without.contains("default_region"), "{without}");
    }

    #[test]
    fn what_is_not_a_phone_number_is_refused_with_a_reason() {
        for (text, why) in [
            ("+0612345678", "never starts with 0"),
            ("+1234567890123456", "more than 15 digits"),
            ("+999123456", "country code"),
            ("+1555123", "wrong length"),
            ("+1", "wrong length"),
            ("hello", "not a phone number"),
            ("+1 555 123 4567 ext. 12", "extension"),
            ("+1555'; DROP TABLE recipients; --", "not a phone number"),
        ] {
            let reason = normalize(text, fr()).unwrap_err();
            assert!(reason.contains(why), "{text}: {reason}");
        }
        let long = normalize(&"9".repeat(10_000), fr()).unwrap_err();
        assert!(long.len() < 200, "{long}");
    }

    #[test]
    fn regions_are_iso_codes_the_metadata_knows() {
        let all = regions();
        assert!(all.len() > 200, "{}", all.len());
        assert!(all.iter().any(|r| r == "FR") && !all.iter().any(|r| r == "XX"));
        assert_eq!(region("FR").unwrap(), Id::FR);
        assert!(region("fr").is_err());
        assert!(region("XX").is_err());
        assert!(region("").is_err());
    }
}
