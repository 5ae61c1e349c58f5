//! TLS between members with real `mesos-master` processes on 127.0.0.x: a CA
//! rotation in the usual steps without losing the quorum, the refusal of members
//! that cannot prove themselves (a certificate of an unknown CA, plaintext), and
//! one-line startup refusals of bad certificate files.
//!
//! Certificates are generated in the test with the local runtime's CA
//! (`mesos_operator::operator::local::certs`, rcgen). Each member's files live in
//! a directory laid out like a mounted Kubernetes Secret: `tls.crt` -> `..data/tls.crt`
//! -> `..<n>/tls.crt`, updated by swapping the `..data` symlink as the kubelet
//! does for cert-manager's Secrets.
//!
//! The local runtime's `--tls` (`peer_tls/local.rs`) and `spec.tls` through the
//! reconcile loop (`peer_tls/reconcile.rs`) are here too.

mod local;
mod reconcile;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use mesos_operator::operator::local::certs::{CertAuthority, IssuedCert};

use crate::support::ensemble::{allocate_port, hex, Ensemble, PeerTls, EVENTUALLY, MASTER};
/// Every write of the rotation must be acknowledged this soon: a quorum lost
/// during a step would leave writes waiting for longer (the election timeout is
/// 500 ms; a member's restart takes well under a second).
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
/// Certificate files are re-read this often in the tests.
const RELOAD_INTERVAL_MS: u64 = 200;

/// A directory laid out like a mounted Secret volume.
struct SecretDir {
    dir: PathBuf,
    version: u32,
}

impl SecretDir {
    fn new(dir: PathBuf) -> SecretDir {
        std::fs::create_dir_all(&dir).unwrap();
        SecretDir { dir, version: 0 }
    }

    /// Publishes a new set of files the way the kubelet does: a new directory,
    /// then one atomic rename of the `..data` symlink.
    fn publish(&mut self, cert: &IssuedCert, ca_bundle: &str) {
        self.version += 1;
        let version_dir = format!("..{}", self.version);
        let target = self.dir.join(&version_dir);
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("tls.crt"), &cert.cert_pem).unwrap();
        std::fs::write(target.join("tls.key"), &cert.key_pem).unwrap();
        std::fs::write(target.join("ca.crt"), ca_bundle).unwrap();
        let staging = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&staging);
        std::os::unix::fs::symlink(&version_dir, &staging).unwrap();
        std::fs::rename(&staging, self.dir.join("..data")).unwrap();
        for name in ["tls.crt", "tls.key", "ca.crt"] {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The member's `--peer_tls_*` flags: the files the `..data` symlink points at.
    fn peer_tls(&self) -> PeerTls {
        PeerTls {
            cert_file: self.file("tls.crt"),
            key_file: self.file("tls.key"),
            ca_file: self.file("ca.crt"),
            reload_interval_ms: RELOAD_INTERVAL_MS,
        }
    }
}

fn issue(ca: &CertAuthority, member: SocketAddr) -> IssuedCert {
    ca.issue(&[member.ip().to_string()]).unwrap()
}

/// Three members on 127.0.0.{1,2,3}, each with a certificate of `ca` for its IP
/// and the bundle `ca` alone, in a Secret-like directory; not started.
fn tls_ensemble(ca: &CertAuthority) -> (Ensemble, Vec<SecretDir>) {
    let mut ensemble = Ensemble::builder().members(3).build();
    let secrets: Vec<SecretDir> = (0..3)
        .map(|i| {
            let mut secret = SecretDir::new(ensemble.dir().join(format!("tls-{i}")));
            secret.publish(&issue(ca, ensemble.member(i)), &ca.cert_pem());
            secret
        })
        .collect();
    for (i, secret) in secrets.iter().enumerate() {
        ensemble.set_tls(i, Some(secret.peer_tls()));
    }
    (ensemble, secrets)
}

/// Counter `key` of member `i`'s `/metrics/snapshot`.
fn counter(ensemble: &Ensemble, i: usize, key: &str) -> u64 {
    ensemble
        .metrics(i)
        .get(key)
        .copied()
        .unwrap_or_else(|| panic!("{key} missing from member {i}'s metrics")) as u64
}

/// One append through whichever member leads, with how long it took; `None` if
/// nothing acknowledged it within `within`.
fn append(ensemble: &Ensemble, data: &[u8], within: Duration) -> Option<(u64, Duration)> {
    let started = Instant::now();
    let position = ensemble.append(data, within)?;
    Some((position, started.elapsed()))
}

/// Writes `count` values, each acknowledged within [`WRITE_DEADLINE`]; returns the
/// slowest acknowledgement.
fn write_some(
    ensemble: &Ensemble,
    tag: &str,
    count: usize,
    acked: &mut BTreeMap<u64, String>,
) -> Duration {
    let mut slowest = Duration::ZERO;
    for k in 0..count {
        let value = format!("{tag}-{k}");
        let (position, took) =
            append(ensemble, value.as_bytes(), WRITE_DEADLINE).unwrap_or_else(|| {
                panic!("append {value} was not acknowledged within {WRITE_DEADLINE:?}: quorum lost")
            });
        assert!(
            acked.insert(position, hex(value.as_bytes())).is_none(),
            "position {position} acknowledged twice"
        );
        slowest = slowest.max(took);
    }
    slowest
}

/// Waits until member `i` has loaded its changed files (its reload counter
/// passed `before`).
fn wait_for_reload(ensemble: &Ensemble, i: usize, before: u64) {
    let deadline = Instant::now() + EVENTUALLY;
    while counter(ensemble, i, "log/transport/tls_reloads") <= before {
        assert!(
            Instant::now() < deadline,
            "member {i} never reloaded its certificate files"
        );
        sleep(POLL);
    }
}

/// A member's certificate and CA bundle for one step of a rotation.
type MaterialFor<'a> = dyn Fn(usize) -> (IssuedCert, String) + 'a;

/// The usual CA rotation, one member at a time in each step, writes going on:
/// 1. the bundle becomes old + new CA everywhere;
/// 2. each member gets a certificate of the new CA;
/// 3. the old CA leaves the bundle.
///
/// After each member's change the member is killed (-9) and restarted, so every
/// link is re-established with the material of that moment; writes through the
/// others must be acknowledged throughout (two of three members always trust each
/// other). A member that only reloads (no restart) is checked too: its reload
/// counter rises and its established links keep working.
#[test]
fn a_ca_rotation_in_the_usual_steps_never_loses_the_quorum() {
    let started = Instant::now();
    let old_ca = CertAuthority::generate("old members CA").unwrap();
    let new_ca = CertAuthority::generate("new members CA").unwrap();
    let both = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    let (mut ensemble, mut secrets) = tls_ensemble(&old_ca);
    for i in 0..3 {
        ensemble.start(i);
    }
    ensemble.wait_until_voting(&[0, 1, 2]);
    for i in 0..3 {
        let status = ensemble.status(i).unwrap();
        assert_eq!(status["peer_tls"], true, "{status}");
    }
    let mut acked = BTreeMap::new();
    let mut slowest = write_some(&ensemble, "old-ca", 5, &mut acked);

    let members = ensemble.members().to_vec();
    let steps: [(&str, &MaterialFor); 3] = [
        ("bundle", &|i| (issue(&old_ca, members[i]), both.clone())),
        ("new-cert", &|i| (issue(&new_ca, members[i]), both.clone())),
        ("drop-old", &|i| {
            (issue(&new_ca, members[i]), new_ca.cert_pem())
        }),
    ];
    for (step, material) in steps {
        let materials: Vec<_> = (0..3).map(material).collect();
        for (i, (cert, bundle)) in materials.into_iter().enumerate() {
            let reloads = counter(&ensemble, i, "log/transport/tls_reloads");
            secrets[i].publish(&cert, &bundle);
            wait_for_reload(&ensemble, i, reloads);
            slowest = slowest.max(write_some(
                &ensemble,
                &format!("{step}-{i}-reloaded"),
                3,
                &mut acked,
            ));
            ensemble.kill(i);
            slowest = slowest.max(write_some(
                &ensemble,
                &format!("{step}-{i}-down"),
                3,
                &mut acked,
            ));
            ensemble.start(i);
            ensemble.wait_until_voting(&[0, 1, 2]);
            slowest = slowest.max(write_some(
                &ensemble,
                &format!("{step}-{i}-back"),
                3,
                &mut acked,
            ));
        }
    }
    for i in 0..3 {
        ensemble.assert_holds(i, &acked);
        assert_eq!(
            counter(&ensemble, i, "log/transport/tls_reload_failures"),
            0
        );
    }
    eprintln!(
        "rotation: {} writes acknowledged, slowest {slowest:?}, {:?} in all",
        acked.len(),
        started.elapsed()
    );
}

/// Members that cannot prove themselves never rejoin: one restarted with a
/// certificate of a CA the others do not trust (its handshakes are refused and
/// counted, it learns nothing more), then one without TLS at all (refused as
/// plaintext). The other two keep the quorum throughout.
#[test]
fn members_without_a_trusted_certificate_cannot_join() {
    let ca = CertAuthority::generate("members CA").unwrap();
    let rogue_ca = CertAuthority::generate("rogue CA").unwrap();
    let (mut ensemble, mut secrets) = tls_ensemble(&ca);
    // Auto-initialization needs every member: all start trusted.
    for i in 0..3 {
        ensemble.start(i);
    }
    ensemble.wait_until_voting(&[0, 1, 2]);
    let mut acked = BTreeMap::new();
    write_some(&ensemble, "with-2", 3, &mut acked);
    ensemble.assert_holds(2, &acked);

    // Member 2 comes back trusting the real CA (so its own view of the others
    // verifies) but presenting a certificate of another.
    ensemble.kill(2);
    let rogue_cert = issue(&rogue_ca, ensemble.member(2));
    let bundle = format!("{}{}", rogue_ca.cert_pem(), ca.cert_pem());
    secrets[2].publish(&rogue_cert, &bundle);
    ensemble.start(2);
    let mut without = BTreeMap::new();
    write_some(&ensemble, "without-2", 5, &mut without);
    let refused =
        |ensemble: &Ensemble, key: &str| counter(ensemble, 0, key) + counter(ensemble, 1, key);
    let deadline = Instant::now() + EVENTUALLY;
    while refused(&ensemble, "log/transport/refused_tls_handshake") == 0 {
        assert!(
            Instant::now() < deadline,
            "no handshake of the rogue member was refused"
        );
        sleep(POLL);
    }
    // Its own links out were refused too; give it a moment it could have used.
    sleep(Duration::from_secs(1));
    write_some(&ensemble, "without-2", 2, &mut without);
    let learned = ensemble.learned(2).unwrap_or_default();
    assert!(
        without
            .keys()
            .all(|position| !learned.contains_key(position)),
        "the member with a rogue certificate learned new entries"
    );

    // Without TLS: its links are refused as plaintext.
    ensemble.kill(2);
    ensemble.set_tls(2, None);
    ensemble.start(2);
    let deadline = Instant::now() + EVENTUALLY;
    while refused(&ensemble, "log/transport/refused_plaintext") == 0 {
        assert!(Instant::now() < deadline, "no plaintext link was refused");
        sleep(POLL);
    }
    write_some(&ensemble, "still-without-2", 3, &mut without);
    let status = loop {
        if let Some(status) = ensemble.status(2) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the plaintext member never answered"
        );
        sleep(POLL);
    };
    assert_eq!(status["peer_tls"], false, "{status}");
    let learned = ensemble.learned(2).unwrap_or_default();
    assert!(
        without
            .keys()
            .all(|position| !learned.contains_key(position)),
        "the plaintext member learned new entries"
    );
    acked.extend(without);
    for i in [0, 1] {
        ensemble.assert_holds(i, &acked);
    }
}

/// The master refuses bad certificate files at startup, with one line naming the
/// flag and the reason, and exit code 1.
#[test]
fn bad_certificate_files_are_refused_at_startup_in_one_line() {
    let root = tempfile::tempdir().unwrap();
    let ca = CertAuthority::generate("members CA").unwrap();
    let ip = [127, 0, 0, 1].into();
    let member = SocketAddr::new(ip, allocate_port(&[ip]));
    let good = issue(&ca, member);
    let expired = ca
        .issue_between(
            &[member.ip().to_string()],
            Some(((2020, 1, 1), (2021, 1, 1))),
        )
        .unwrap();
    let write = |name: &str, contents: &str| -> PathBuf {
        let path = root.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let (cert, key, ca_file) = (
        write("tls.crt", &good.cert_pem),
        write("tls.key", &good.key_pem),
        write("ca.crt", &ca.cert_pem()),
    );
    let expired_cert = write("expired.crt", &expired.cert_pem);
    let expired_key = write("expired.key", &expired.key_pem);
    let other_key = write("other.key", &issue(&ca, member).key_pem);
    let garbage = write("garbage.crt", "not a certificate\n");

    let refusal = |extra: &[String]| -> String {
        let output = Command::new(MASTER)
            .arg(format!("--ip={}", member.ip()))
            .arg(format!("--port={}", member.port()))
            .arg("--quorum=1")
            .arg(format!("--masters={member}"))
            .arg(format!("--work_dir={}", root.path().join("work").display()))
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    };
    let flags = |cert: &Path, key: &Path, ca: &Path| {
        vec![
            format!("--peer_tls_cert_file={}", cert.display()),
            format!("--peer_tls_key_file={}", key.display()),
            format!("--peer_tls_ca_file={}", ca.display()),
        ]
    };
    let line = refusal(&[format!("--peer_tls_cert_file={}", cert.display())]);
    assert!(
        line.contains("missing: --peer_tls_key_file, --peer_tls_ca_file"),
        "{line}"
    );
    let line = refusal(&flags(&expired_cert, &expired_key, &ca_file));
    assert!(line.contains("the certificate has expired"), "{line}");
    let line = refusal(&flags(&cert, &other_key, &ca_file));
    assert!(
        line.contains("not the private key of the certificate"),
        "{line}"
    );
    let line = refusal(&flags(&garbage, &key, &ca_file));
    assert!(line.contains("holds no PEM certificate"), "{line}");
    let line = refusal(&flags(&cert, &key, &root.path().join("absent.crt")));
    assert!(
        line.contains("--peer_tls_ca_file") && line.contains("cannot read it"),
        "{line}"
    );
}
