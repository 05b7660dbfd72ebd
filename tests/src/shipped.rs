//! Mosquitto run with the shipped `deploy/mosquitto/` files (config and ACL), unchanged except for what must
//! move into a test directory: ports, file paths, the service user. TLS material comes from a throwaway CA
//! made with rcgen; logins are written with `mosquitto_passwd`, the cloud's into the cloud listener's own
//! password file (`passwd-cloud`), every other into the edges' (`passwd`).

use crate::Mosquitto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shipped deployment directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A CA and what it signed, as PEM files in a directory.
pub struct Pki {
    /// The CA certificate (what clients put in `mqtt.tls.ca`).
    pub ca: PathBuf,
    /// The broker's certificate, for `localhost` and 127.0.0.1.
    pub broker_cert: PathBuf,
    /// The broker's key.
    pub broker_key: PathBuf,
}

/// Makes a CA named `name` in `dir` and a broker certificate signed by it.
pub fn make_pki(dir: &Path, name: &str) -> Pki {
    std::fs::create_dir_all(dir).expect("pki dir");
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let broker_key = KeyPair::generate().expect("broker key");
    let mut broker_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("broker params");
    broker_params
        .distinguished_name
        .push(DnType::CommonName, "broker");
    let broker_cert = broker_params
        .signed_by(&broker_key, &issuer)
        .expect("broker cert");
    let pki = Pki {
        ca: dir.join("ca.pem"),
        broker_cert: dir.join("broker.pem"),
        broker_key: dir.join("broker.key"),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).expect("write ca");
    std::fs::write(&pki.broker_cert, broker_cert.pem()).expect("write cert");
    std::fs::write(&pki.broker_key, broker_key.serialize_pem()).expect("write key");
    pki
}

/// The login of the cloud workers in the shipped ACL; it goes into the cloud listener's password file.
pub const CLOUD_LOGIN: &str = "tierline-cloud";

/// Mosquitto running the shipped config.
pub struct ShippedBroker {
    /// The broker process; its `port()` is the plain loopback listener.
    pub broker: Mosquitto,
    /// Port of the edges' TLS listener (8883 in the shipped config).
    pub tls_port: u16,
    /// Port of the cloud workers' TLS listener (8884 in the shipped config).
    pub cloud_port: u16,
    /// The CA that signed the broker's certificate.
    pub pki: Pki,
}

/// Starts Mosquitto with `deploy/mosquitto/mosquitto.conf` and `deploy/mosquitto/acl`, with `users`
/// (login, password) in its password files: [`CLOUD_LOGIN`] in the cloud listener's, the others in the
/// edges'.
pub fn start(dir: &Path, users: &[(&str, &str)]) -> ShippedBroker {
    let data = dir.join("mosquitto");
    std::fs::create_dir_all(&data).expect("mosquitto dir");
    let pki = make_pki(&data.join("tls"), "plant");
    let passwd = data.join("passwd");
    let passwd_cloud = data.join("passwd-cloud");
    std::fs::write(&passwd, "").expect("passwd");
    std::fs::write(&passwd_cloud, "").expect("passwd-cloud");
    for (user, password) in users {
        let file = if *user == CLOUD_LOGIN {
            &passwd_cloud
        } else {
            &passwd
        };
        let status = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(file)
            .arg(user)
            .arg(password)
            .status()
            .expect("mosquitto_passwd (package mosquitto) must be installed");
        assert!(status.success(), "mosquitto_passwd failed for {user}");
    }
    let acl = data.join("acl");
    std::fs::copy(deploy_dir().join("mosquitto/acl"), &acl).expect("copy acl");
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < 3 {
        let p = tierline_demo::broker::free_port().expect("free port");
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let (plain, tls_port, cloud_port) = (ports[0], ports[1], ports[2]);
    let log = data.join("mosquitto.log");
    let shipped = std::fs::read_to_string(deploy_dir().join("mosquitto/mosquitto.conf"))
        .expect("shipped conf");
    let path = |p: &Path| p.display().to_string();
    let conf: String = shipped
        .lines()
        .map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("listener"), Some("8883")) => format!("listener {tls_port} 127.0.0.1"),
                (Some("listener"), Some("8884")) => format!("listener {cloud_port} 127.0.0.1"),
                (Some("listener"), _) => format!("listener {plain} 127.0.0.1"),
                (Some("cafile"), _) => format!("cafile {}", path(&pki.ca)),
                (Some("certfile"), _) => format!("certfile {}", path(&pki.broker_cert)),
                (Some("keyfile"), _) => format!("keyfile {}", path(&pki.broker_key)),
                (Some("password_file"), Some(shipped)) if shipped.ends_with("passwd-cloud") => {
                    format!("password_file {}", path(&passwd_cloud))
                }
                (Some("password_file"), _) => format!("password_file {}", path(&passwd)),
                (Some("acl_file"), _) => format!("acl_file {}", path(&acl)),
                (Some("persistence_location"), _) => {
                    format!("persistence_location {}/", path(&data))
                }
                (Some("log_dest"), _) => format!("log_dest file {}", path(&log)),
                (Some("pid_file"), _) | (Some("user"), _) => String::new(),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let conf_path = data.join("mosquitto.conf");
    std::fs::write(&conf_path, conf).expect("write conf");
    let broker = Mosquitto::from_config(plain, conf_path, log);
    ShippedBroker {
        broker,
        tls_port,
        cloud_port,
        pki,
    }
}
