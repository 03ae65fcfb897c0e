//! Pulls against the real rig: a private containerd 1.6 (Debian's, with runc) and a private
//! registry (Debian's docker-registry with htpasswd) on loopback, images built by the kit. Needs
//! root and `tests/setup --containers`; fails, rather than skips, without them. Each test has
//! its own containerd, registry and namespace. `--nocapture` shows the times.

use std::sync::Mutex;
use std::time::Instant;

use verge_runtime_containerd::{Containerd, Credentials, Progress, PullError};
use verge_tests::containerd::Containerd as Rig;
use verge_tests::images::{self, Compression, ImageConfig, OciLayout, TempDir};
use verge_tests::registry::Registry;

fn credentials(registry: &Registry) -> Credentials {
    Credentials {
        address: registry.host(),
        username: registry.username().to_owned(),
        password: registry.password().to_owned(),
    }
}

async fn connect(rig: &Rig) -> Containerd {
    Containerd::connect(rig.socket(), rig.namespace())
        .await
        .expect("connect to the rig's containerd")
        .with_snapshotter(rig.snapshotter())
}

fn busybox(work: &TempDir) -> OciLayout {
    let config = ImageConfig {
        entrypoint: vec!["sh".into(), "-c".into()],
        cmd: vec!["echo \"$GREETING\"".into()],
        env: vec!["GREETING=hello".into()],
        working_dir: "/tmp".into(),
        user: "1000:1000".into(),
        ..ImageConfig::default()
    };
    images::busybox_image(&config, Compression::Gzip, &work.join("busybox"), "v1")
}

fn snapshots(rig: &Rig) -> String {
    rig.ctr_ok(&["snapshots", "--snapshotter", rig.snapshotter(), "ls"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_busybox_from_the_authenticated_registry_then_again_then_removes_it() {
    let rig = Rig::start();
    let registry = Registry::start();
    let work = TempDir::new("pull");
    let layout = busybox(&work);
    registry.push(&layout, "busybox");
    let reference = registry.reference("busybox", "v1");
    let containerd = connect(&rig).await;
    assert!(containerd.image(&reference).await.expect("image").is_none());

    let seen = Mutex::new(Vec::new());
    let record = |p: Progress| seen.lock().expect("progress").push(p);
    let begun = Instant::now();
    let pulled = containerd
        .pull(&reference, Some(&credentials(&registry)), record)
        .await
        .expect("pull");
    eprintln!(
        "first pull: {:?} ({:?} inside)",
        begun.elapsed(),
        pulled.elapsed
    );
    assert_eq!(pulled.name, reference);
    assert_eq!(pulled.manifest_digest, layout.manifest.digest);
    assert_eq!(pulled.chain_id, layout.chain_id());
    assert_eq!(pulled.config.diff_ids, layout.diff_ids);
    assert_eq!(pulled.config.run.entrypoint, ["sh", "-c"]);
    assert_eq!(pulled.config.run.cmd, ["echo \"$GREETING\""]);
    assert!(pulled.config.run.env.contains(&"GREETING=hello".to_owned()));
    assert_eq!(pulled.config.run.working_dir, "/tmp");
    assert_eq!(pulled.config.run.user, "1000:1000");
    assert_eq!(pulled.downloaded, 3, "config, layer, manifest");
    let expected_size = layout.manifest.size + layout.config.size + layout.layers[0].size;
    assert_eq!(u64::try_from(pulled.size).ok(), Some(expected_size));
    {
        let seen = seen.lock().expect("progress");
        assert!(
            matches!(&seen[0], Progress::Resolved { manifest_digest, layers: 1, .. } if *manifest_digest == layout.manifest.digest),
            "{seen:?}"
        );
        assert!(seen.contains(&Progress::Unpacked {
            index: 0,
            chain_id: layout.chain_id(),
            present: false
        }));
    }

    let listed = rig.ctr_ok(&["images", "ls"]);
    assert!(
        listed.contains(&reference) && listed.contains(&layout.manifest.digest),
        "ctr images ls: {listed}"
    );
    assert!(
        snapshots(&rig).contains(&layout.chain_id()),
        "{}",
        snapshots(&rig)
    );
    // Nothing left behind: no lease, no active extraction snapshot.
    assert!(
        rig.ctr_ok(&["leases", "ls", "-q"]).trim().is_empty(),
        "leases: {}",
        rig.ctr_ok(&["leases", "ls"])
    );
    assert!(!snapshots(&rig).contains("extract-"));
    // The image runs: the snapshot is a real busybox rootfs.
    let runc_root = rig.runc_root().display().to_string();
    let out = rig.ctr_ok(&[
        "run",
        "--rm",
        "--snapshotter",
        rig.snapshotter(),
        "--runc-root",
        &runc_root,
        &reference,
        "pulled",
        "echo",
        "ran",
    ]);
    assert_eq!(out, "ran\n");

    let present = containerd
        .image(&reference)
        .await
        .expect("image")
        .expect("present");
    assert_eq!(present.manifest_digest, pulled.manifest_digest);
    assert_eq!(present.chain_id, pulled.chain_id);
    assert_eq!(present.config, pulled.config);
    assert_eq!(present.size, pulled.size);

    // Again: everything is there, nothing is downloaded.
    seen.lock().expect("progress").clear();
    let begun = Instant::now();
    let again = containerd
        .pull(&reference, Some(&credentials(&registry)), record)
        .await
        .expect("second pull");
    eprintln!("second pull: {:?}", begun.elapsed());
    assert_eq!(again.downloaded, 0);
    assert_eq!(again.chain_id, pulled.chain_id);
    assert!(
        seen.lock().expect("progress").iter().all(|p| match p {
            Progress::Resolved { .. } => true,
            Progress::Blob { present, .. } | Progress::Unpacked { present, .. } => *present,
        }),
        "{:?}",
        seen.lock()
    );

    assert!(containerd.remove_image(&reference).await.expect("remove"));
    assert!(!containerd.remove_image(&reference).await.expect("remove"));
    assert!(!rig.ctr_ok(&["images", "ls"]).contains(&reference));
    let left = snapshots(&rig);
    assert!(
        !left.contains(&layout.chain_id()),
        "the snapshot outlived its image: {left}"
    );
    let content = rig.ctr_ok(&["content", "ls"]);
    assert!(
        !content.contains(&layout.layers[0].digest),
        "the layer outlived its image: {content}"
    );
    assert!(containerd.image(&reference).await.expect("image").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_with_the_registry_401() {
    let rig = Rig::start();
    let registry = Registry::start();
    let work = TempDir::new("pull");
    registry.push(&busybox(&work), "busybox");
    let reference = registry.reference("busybox", "v1");
    let containerd = connect(&rig).await;
    let wrong = Credentials {
        password: "not-the-password".into(),
        ..credentials(&registry)
    };
    let err = containerd
        .pull(&reference, Some(&wrong), |_| {})
        .await
        .expect_err("a wrong password");
    eprintln!("wrong password: {err}");
    assert!(matches!(err, PullError::Registry { .. }), "{err:?}");
    // The registry's own words (distribution's error envelope), not only the status.
    assert!(
        err.to_string().contains("401") && err.to_string().contains("authentication required"),
        "{err}"
    );
    let err = containerd
        .pull(&reference, None, |_| {})
        .await
        .expect_err("no credentials");
    eprintln!("anonymous: {err}");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(rig.ctr_ok(&["images", "ls", "-q"]).trim().is_empty());
    assert!(rig.ctr_ok(&["leases", "ls", "-q"]).trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_pinned_references_are_verified() {
    let rig = Rig::start();
    let registry = Registry::start();
    let work = TempDir::new("pull");
    let layout = busybox(&work);
    registry.push(&layout, "busybox");
    let containerd = connect(&rig).await;
    let auth = credentials(&registry);

    let pinned = format!("{}/busybox@{}", registry.host(), layout.manifest.digest);
    let pulled = containerd
        .pull(&pinned, Some(&auth), |_| {})
        .await
        .expect("pull by digest");
    assert_eq!(pulled.manifest_digest, layout.manifest.digest);
    let both = format!(
        "{}@{}",
        registry.reference("busybox", "v1"),
        layout.manifest.digest
    );
    containerd
        .pull(&both, Some(&auth), |_| {})
        .await
        .expect("pull by tag and digest");

    // The config's digest is a real blob of the repository, but not this manifest.
    let wrong = format!(
        "{}@{}",
        registry.reference("busybox", "v1"),
        layout.config.digest
    );
    let err = containerd
        .pull(&wrong, Some(&auth), |_| {})
        .await
        .expect_err("a wrong digest");
    eprintln!("wrong digest: {err}");
    assert!(
        matches!(err, PullError::Registry { .. } | PullError::Digest { .. }),
        "{err:?}"
    );
    let malformed = format!("{}/busybox@sha256:abc", registry.host());
    assert!(matches!(
        containerd.pull(&malformed, Some(&auth), |_| {}).await,
        Err(PullError::Reference { .. })
    ));
    assert!(!rig.ctr_ok(&["images", "ls"]).contains(&wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_layer_image_unpacks_to_its_chain_id() {
    let rig = Rig::start();
    let registry = Registry::start_without_auth();
    let work = TempDir::new("pull");
    let base = work.join("base");
    images::busybox_rootfs(&base);
    let top = work.join("top");
    std::fs::create_dir_all(top.join("etc")).expect("top layer");
    std::fs::write(top.join("etc/motd"), "second layer\n").expect("motd");
    let layout = images::build_image(
        &[&base, &top],
        &ImageConfig::cmd(&["cat", "/etc/motd"]),
        Compression::None,
        &work.join("layout"),
        "two",
    );
    registry.push(&layout, "layered");
    let reference = registry.reference("layered", "two");
    let containerd = connect(&rig).await;
    let pulled = containerd
        .pull(&reference, None, |_| {})
        .await
        .expect("anonymous pull");
    assert_eq!(pulled.chain_id, layout.chain_id());
    let listed = snapshots(&rig);
    assert!(
        listed.contains(&layout.chain_id()) && listed.contains(&layout.diff_ids[0]),
        "{listed}"
    );
    let runc_root = rig.runc_root().display().to_string();
    let out = rig.ctr_ok(&[
        "run",
        "--rm",
        "--snapshotter",
        rig.snapshotter(),
        "--runc-root",
        &runc_root,
        &reference,
        "motd",
    ]);
    assert_eq!(out, "second layer\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pulls_of_one_image_at_once_both_succeed() {
    let rig = Rig::start();
    let registry = Registry::start();
    let work = TempDir::new("pull");
    let layout = busybox(&work);
    registry.push(&layout, "busybox");
    let reference = registry.reference("busybox", "v1");
    let containerd = connect(&rig).await;
    let auth = credentials(&registry);
    let (a, b) = tokio::join!(
        containerd.pull(&reference, Some(&auth), |_| {}),
        containerd.pull(&reference, Some(&auth), |_| {}),
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a.chain_id, layout.chain_id());
    assert_eq!(b.chain_id, layout.chain_id());
    assert!(snapshots(&rig).contains(&layout.chain_id()));
    assert!(!snapshots(&rig).contains("extract-"), "{}", snapshots(&rig));
    assert!(rig.ctr_ok(&["leases", "ls", "-q"]).trim().is_empty());
}

/// Turns `layout` into a two-platform image: an OCI index with `layout`'s manifest for this
/// machine's architecture and `other`'s (its blobs copied in) for s390x, tagged as `layout`'s
/// tag. Returns the index's digest.
fn make_index(layout: &OciLayout, other: &OciLayout) -> String {
    for blob in [&other.manifest, &other.config]
        .into_iter()
        .chain(&other.layers)
    {
        std::fs::copy(other.blob(&blob.digest), layout.blob(&blob.digest)).expect("copy blob");
    }
    let entry = |d: &images::Descriptor, arch: &str| {
        serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size,
                           "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": images::media_type::INDEX,
        "manifests": [entry(&other.manifest, "s390x"), entry(&layout.manifest, images::oci_arch())],
    });
    let bytes = serde_json::to_vec(&index).expect("index json");
    let digest = format!("sha256:{}", images::sha256_bytes(&bytes));
    std::fs::write(layout.blob(&digest), &bytes).expect("index blob");
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": images::media_type::INDEX, "digest": digest, "size": bytes.len(),
                       "annotations": {"org.opencontainers.image.ref.name": layout.tag}}],
    });
    std::fs::write(
        layout.dir.join("index.json"),
        serde_json::to_vec(&top).expect("json"),
    )
    .expect("index.json");
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_is_followed_to_this_machines_platform() {
    let rig = Rig::start();
    let registry = Registry::start();
    let work = TempDir::new("pull");
    let layout = busybox(&work);
    let other = images::busybox_image(
        &ImageConfig::cmd(&["echo", "other platform"]),
        Compression::None,
        &work.join("other"),
        "v1",
    );
    let index_digest = make_index(&layout, &other);
    let out = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("{}:{}", registry.username(), registry.password()),
            &layout.skopeo_ref(),
            &format!("docker://{}", registry.reference("multi", "v1")),
        ])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let containerd = connect(&rig).await;
    let reference = registry.reference("multi", "v1");
    let pulled = containerd
        .pull(&reference, Some(&credentials(&registry)), |_| {})
        .await
        .expect("pull of an index");
    assert_eq!(pulled.index_digest.as_deref(), Some(index_digest.as_str()));
    assert_eq!(pulled.manifest_digest, layout.manifest.digest);
    assert_eq!(pulled.chain_id, layout.chain_id());
    assert!(snapshots(&rig).contains(&layout.chain_id()));
    // (Both platforms' images are busybox: the same diff_id, hence one snapshot.)
    assert_eq!(pulled.config.run.cmd, ["echo \"$GREETING\""]);
    // Pinned to the index's digest: the same.
    let pinned = format!("{}/multi@{index_digest}", registry.host());
    let again = containerd
        .pull(&pinned, Some(&credentials(&registry)), |_| {})
        .await
        .expect("pull of an index by digest");
    assert_eq!(again.manifest_digest, layout.manifest.digest);
    assert_eq!(again.downloaded, 0);
}
