//! Rule 2.6: what a tensor or layer name may be.

use crate::format::limits::MAX_NAME_BYTES;

/// The reserved safetensors key that is never a tensor name.
pub const METADATA_KEY: &str = "__metadata__";

/// Why `name` is not a valid name (rule 2.6), or `None` when it is.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("an empty name".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "a name of {} bytes (limit {MAX_NAME_BYTES})",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Some("a name containing control characters".into());
    }
    if name == METADATA_KEY {
        return Some("the reserved name __metadata__".into());
    }
    None
}
