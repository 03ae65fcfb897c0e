//! Components named by OCI references: the runtime asks its `ComponentFetcher` on `prepare`,
//! reports the manifest digest as `imageHash`, starts what was prepared without asking again,
//! and refuses references when it has no fetcher. The fetcher here is a fake that hands out
//! the sample filter; the real one is tested end to end in `tests/tests/wasm_oci.rs`.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Rig;
use verge_hub::{Identity, QueueLimits};
use verge_runtime::{
    BoxFuture, ModuleContext, ModuleLog, ModuleRuntime, ModuleSpec, PullPolicy, RuntimeError,
};
use verge_runtime_wasm::{ComponentFetcher, Fetched, WasmOptions, WasmRuntime};

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

#[derive(Debug)]
struct FakeFetcher {
    component: PathBuf,
    calls: AtomicUsize,
}

impl ComponentFetcher for FakeFetcher {
    fn fetch<'a>(&'a self, spec: &'a ModuleSpec) -> BoxFuture<'a, Result<Fetched, RuntimeError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if spec.pull_policy == PullPolicy::Never {
                return Err(RuntimeError::NotFound(format!(
                    "{} is not cached",
                    spec.image
                )));
            }
            Ok(Fetched {
                path: self.component.clone(),
                digest: DIGEST.into(),
            })
        })
    }
}

fn reference_spec(image: &str) -> ModuleSpec {
    ModuleSpec {
        name: "filter".into(),
        kind: "wasm".into(),
        image: image.into(),
        version: "1".into(),
        ..ModuleSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_go_to_the_fetcher_and_start_runs_what_was_prepared() {
    let rig = Rig::new("fetcher", &[], QueueLimits::default());
    let fetcher = Arc::new(FakeFetcher {
        component: verge_tests::guest("filter"),
        calls: AtomicUsize::new(0),
    });
    let mut options = WasmOptions::new(rig.dir.join("fetcher-cache"));
    options.fetcher = Some(Arc::clone(&fetcher) as Arc<dyn ComponentFetcher>);
    let runtime = WasmRuntime::new(options).unwrap();

    let spec = reference_spec("127.0.0.1:5000/filter:1.0");
    let prepared = runtime.prepare(&spec).await.unwrap();
    assert_eq!(prepared.image_hash.as_deref(), Some(DIGEST));
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);

    let context = ModuleContext {
        identity: Identity::module(common::DEVICE, "filter"),
        generation_id: "gen1".into(),
        iothub_hostname: "hub.example".into(),
        gateway_hostname: "edge.example".into(),
        hub: Arc::clone(&rig.hub),
        twins: Arc::clone(&rig.twins),
        log: ModuleLog::new(1 << 20),
    };
    let mut handle = runtime.start(&spec, context.clone()).await.unwrap();
    handle.stop(std::time::Duration::from_secs(2)).await;
    let mut again = runtime.start(&spec, context).await.unwrap();
    again.stop(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        fetcher.calls.load(Ordering::SeqCst),
        1,
        "start asked the registry again"
    );

    // The fetcher decides for `never`; its NotFound comes through.
    let mut never = reference_spec("myregistry.azurecr.io/filter@sha256:0123");
    never.pull_policy = PullPolicy::Never;
    let err = runtime.prepare(&never).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound(_)), "{err}");
    assert!(
        err.to_string().contains("myregistry.azurecr.io/filter"),
        "{err}"
    );

    // A local path never goes to the fetcher.
    let local = reference_spec(&verge_tests::guest("filter").display().to_string());
    assert!(
        runtime
            .prepare(&local)
            .await
            .unwrap()
            .image_hash
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fetcher_a_reference_is_refused_clearly() {
    let rig = Rig::new("nofetcher", &[], QueueLimits::default());
    let err = rig
        .runtime
        .prepare(&reference_spec("127.0.0.1:5000/filter:1.0"))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Invalid(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:5000/filter:1.0") && text.contains("OCI reference"),
        "{text}"
    );
}
