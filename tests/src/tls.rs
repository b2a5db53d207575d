//! Certificates a test makes for itself (with the machine's `openssl`): a CA, a server
//! certificate it signs for 127.0.0.1 and localhost, and a second, unrelated CA that must
//! be refused.

use anyhow::{Result, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certificates {
    pub dir: PathBuf,
}

impl Certificates {
    /// Generates them into a scratch directory.
    pub fn generate() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "herald-tls-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&dir)?;
        let certs = Self { dir };
        certs.ca("ca")?;
        certs.ca("other-ca")?;
        std::fs::write(
            certs.dir.join("server.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n",
        )?;
        certs.openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ])?;
        certs.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        Ok(certs)
    }

    fn ca(&self, name: &str) -> Result<()> {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN=Herald test {name}"),
        ])
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()?;
        ensure!(
            output.status.success(),
            "openssl {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// The CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA that signed nothing here.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    /// Copies the server's certificate, key and CA into `dir` (a service's own directory).
    pub fn install(&self, dir: &Path) -> Result<()> {
        for file in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(self.dir.join(file), dir.join(file))?;
        }
        Ok(())
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
