//! RabbitMQ: the topology Herald declares and the message it carries.
//!
//! RabbitMQ only carries work; PostgreSQL says what each recipient's state is. A message is a
//! claim ticket for one dispatch of one recipient (see [`message::DispatchMessage`]).

pub mod message;
pub mod topology;

use lapin::{Connection, ConnectionProperties};

/// Opens a connection named after the service, so `rabbitmqctl list_connections` tells them apart.
pub async fn connect(url: &str, service: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("{service}@{}", std::process::id()).into());
    Connection::connect(url, properties).await
}
