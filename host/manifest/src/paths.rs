//! Local component paths in a manifest.
//!
//! A `wasm` module names its component in `settings.image`, either as a local file or as an OCI
//! reference to a component published as a CNCF wasm OCI artifact (`verge push`). A relative
//! path is relative to the manifest file, as a user writing `"image": "./build/filter.wasm"` next
//! to the manifest expects. The CLI resolves such paths before the manifest leaves for the
//! daemon, which may run elsewhere on the filesystem. References are left alone.
//!
//! # Path or reference
//!
//! [`is_local_path`] decides, and the wasm runtime uses the same function, so the CLI and the
//! daemon always agree. `image` is a **local path** when
//!
//! 1. it starts with `/` (absolute), `./` or `../`; or
//! 2. it ends with `.wasm`, has no `@` (no digest), and its first `/`-separated component is not
//!    a registry host: it contains no `.` and no `:` and is not `localhost` (the rule Docker
//!    uses to tell `registry.example/repo` from `user/repo`).
//!
//! Everything else is an **OCI reference**: `127.0.0.1:5000/filter:1.0`,
//! `myregistry.azurecr.io/filter@sha256:…`, `registry.example/components/filter.wasm` (rule 2
//! fails: the first component is a host), `filter:1.0`. So `filter.wasm` and
//! `build/filter.wasm` are files, while a directory whose name has a dot must be written
//! `./my.dir/filter.wasm`.

use std::path::Path;

use serde_json::Value;

use crate::deployment::{EDGE_AGENT_TWIN, MODULES_CONTENT, PROPERTIES_DESIRED};

/// Whether `image` names a local file rather than an OCI reference (see the module's docs for
/// the rule).
pub fn is_local_path(image: &str) -> bool {
    if image.starts_with('/') || image.starts_with("./") || image.starts_with("../") {
        return true;
    }
    if !image.ends_with(".wasm") || image.contains('@') {
        return false;
    }
    match image.split_once('/') {
        None => true,
        Some((first, _)) => !is_registry_host(first),
    }
}

/// Whether the first component of a reference names a registry (`host.domain`, `host:port`,
/// `localhost`) rather than a repository path segment.
fn is_registry_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// Make every relative component path of the `wasm` modules in `manifest` absolute against
/// `base` (the manifest's directory). OCI references ([`is_local_path`] false) are left as they
/// are. Returns how many were rewritten.
pub fn resolve_local_images(manifest: &mut Value, base: &Path) -> usize {
    let modules = manifest
        .get_mut(MODULES_CONTENT)
        .and_then(|m| m.get_mut(EDGE_AGENT_TWIN))
        .and_then(|a| a.get_mut(PROPERTIES_DESIRED))
        .and_then(|d| d.get_mut("modules"))
        .and_then(Value::as_object_mut);
    let Some(modules) = modules else {
        return 0;
    };
    let mut rewritten = 0;
    for module in modules.values_mut() {
        let is_wasm = module
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("wasm"));
        let Some(image) = module.pointer_mut("/settings/image") else {
            continue;
        };
        let Some(path) = image.as_str() else {
            continue;
        };
        if is_wasm && is_local_path(path) && !path.starts_with('/') {
            let absolute = base.join(path);
            let absolute = absolute.canonicalize().unwrap_or(absolute);
            *image = Value::String(absolute.display().to_string());
            rewritten += 1;
        }
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relative_wasm_paths_become_absolute_and_the_rest_stay() {
        let mut m = json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {
            "a": {"type": "wasm", "settings": {"image": "./a.wasm"}},
            "b": {"type": "wasm", "settings": {"image": "/abs/b.wasm"}},
            "c": {"type": "docker", "settings": {"image": "./not-mine.wasm"}},
            "d": {"type": "wasm", "settings": {"image": "registry.io/repo:1"}},
            "e": {"type": "WASM", "settings": {"image": "../up/e.wasm"}}
        }}}}});
        assert_eq!(resolve_local_images(&mut m, Path::new("/base/dir")), 2);
        let image = |n: &str| {
            m.pointer(&format!(
                "/modulesContent/$edgeAgent/properties.desired/modules/{n}/settings/image"
            ))
            .cloned()
        };
        assert_eq!(image("a"), Some(json!("/base/dir/./a.wasm")));
        assert_eq!(image("b"), Some(json!("/abs/b.wasm")));
        assert_eq!(image("c"), Some(json!("./not-mine.wasm")));
        assert_eq!(image("d"), Some(json!("registry.io/repo:1")));
        assert_eq!(image("e"), Some(json!("/base/dir/../up/e.wasm")));
        assert_eq!(resolve_local_images(&mut json!({}), Path::new("/")), 0);
    }

    #[test]
    fn paths_and_references_are_told_apart() {
        for path in [
            "/abs/filter.wasm",
            "/abs/filter",
            "./filter.wasm",
            "./my.dir/filter",
            "../up/filter.wasm",
            "filter.wasm",
            "build/filter.wasm",
            "target/wasm32-wasip2/wasm/filter.wasm",
        ] {
            assert!(is_local_path(path), "{path} should be a path");
        }
        for reference in [
            "127.0.0.1:5000/filter:1.0",
            "127.0.0.1:5000/filter.wasm",
            "localhost/filter.wasm",
            "localhost:5000/filter",
            "[::1]:5000/filter.wasm",
            "myregistry.azurecr.io/filter@sha256:0123",
            "myregistry.azurecr.io/components/filter.wasm",
            "registry.example/filter.wasm:1.0",
            "filter.wasm@sha256:0123",
            "filter:1.0",
            "user/filter",
            "my.dir/filter.wasm",
        ] {
            assert!(
                !is_local_path(reference),
                "{reference} should be a reference"
            );
        }
    }

    #[test]
    fn references_are_never_rewritten_into_paths() {
        let references = [
            "127.0.0.1:5000/filter:1.0",
            "myregistry.azurecr.io/filter@sha256:0123",
            "myregistry.azurecr.io/filter.wasm",
            "localhost:5000/f.wasm",
        ];
        let modules: serde_json::Map<String, Value> = references
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    format!("m{i}"),
                    json!({"type": "wasm", "settings": {"image": r}}),
                )
            })
            .collect();
        let mut m = json!({"modulesContent": {"$edgeAgent": {"properties.desired": {
            "modules": modules
        }}}});
        assert_eq!(resolve_local_images(&mut m, Path::new("/base")), 0);
        for (i, r) in references.iter().enumerate() {
            let image = m.pointer(&format!(
                "/modulesContent/$edgeAgent/properties.desired/modules/m{i}/settings/image"
            ));
            assert_eq!(image, Some(&json!(r)));
        }
    }
}
