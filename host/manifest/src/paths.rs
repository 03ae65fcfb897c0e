//! Local component paths in a manifest.
//!
//! A `wasm` module may name its component by path; a relative path is relative to the manifest
//! file, as a user writing `"image": "./build/filter.wasm"` next to the manifest expects. The CLI
//! resolves such paths before the manifest leaves for the daemon, which may run elsewhere on the
//! filesystem. Anything that is not a path (an OCI reference, later) is left alone.

use std::path::Path;

use serde_json::Value;

use crate::deployment::{EDGE_AGENT_TWIN, MODULES_CONTENT, PROPERTIES_DESIRED};

/// Whether `image` names a local file rather than a registry reference.
pub fn is_local_path(image: &str) -> bool {
    image.starts_with('/')
        || image.starts_with("./")
        || image.starts_with("../")
        || image.ends_with(".wasm")
}

/// Make every relative component path of the `wasm` modules in `manifest` absolute against
/// `base` (the manifest's directory). Returns how many were rewritten.
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
}
