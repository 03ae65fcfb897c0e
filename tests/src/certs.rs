//! Client certificates made with `openssl`, as a device owner would make them.

use std::path::Path;
use std::process::Command;

/// Run `openssl ARGS` in `dir`; its stdout.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (tests/setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        crate::mqtt::output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A self-signed EC certificate for `cn` in `dir`: (cert, key) file names.
pub fn self_signed(dir: &Path, cn: &str) -> (String, String) {
    let (cert, key) = (format!("{cn}.pem"), format!("{cn}.key"));
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &subject,
        ],
    );
    (cert, key)
}

/// A certificate for `cn` signed by the CA `ca` (`ca.pem`, `ca.key` in `dir`).
pub fn signed_by(dir: &Path, ca: &str, cn: &str) -> (String, String) {
    let (cert, key, csr) = (
        format!("{cn}.pem"),
        format!("{cn}.key"),
        format!("{cn}.csr"),
    );
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ],
    );
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage = clientAuth\n")
        .expect("write the extension file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ],
    );
    (cert, key)
}

pub fn thumbprint(dir: &Path, cert: &str) -> String {
    let out = openssl(
        dir,
        &["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"],
    );
    out.trim()
        .rsplit('=')
        .next()
        .expect("openssl prints a fingerprint")
        .replace(':', "")
}
