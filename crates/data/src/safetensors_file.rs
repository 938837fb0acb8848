//! Safetensors files that are byte-identical for identical contents: the `safetensors` crate
//! writes the header's metadata in `HashMap` order, which changes from run to run; here the
//! header is rewritten with sorted keys, so that equal tensors and metadata give equal bytes
//! (features, checkpoints and maps can then be compared, cached and diffed as files).

use std::collections::{BTreeMap, HashMap};

use safetensors::View;

/// Serializes tensors (anything the `safetensors` crate can view: candle's `Tensor`, a
/// `TensorView` of raw bytes) and metadata as safetensors with a canonical (sorted) header.
pub fn safetensors_bytes<'a, V: View>(tensors: impl IntoIterator<Item = (&'a str, V)>, metadata: HashMap<String, String>) -> Result<Vec<u8>, String> {
    let mut named: Vec<(&str, V)> = tensors.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(named, Some(metadata)).map_err(|e| e.to_string())?;
    canonical_header(&bytes)
}

fn canonical_header(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let len = u64::from_le_bytes(bytes.get(..8).ok_or("safetensors output too short")?.try_into().map_err(|_| "header length")?) as usize;
    let header = bytes.get(8..8 + len).ok_or("safetensors header out of range")?;
    let parsed: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let sorted: BTreeMap<String, serde_json::Value> = parsed
        .into_iter()
        .map(|(k, v)| {
            let v = match (k.as_str(), v) {
                ("__metadata__", serde_json::Value::Object(m)) => {
                    serde_json::to_value(m.into_iter().collect::<BTreeMap<String, serde_json::Value>>()).unwrap_or_default()
                }
                (_, v) => v,
            };
            (k, v)
        })
        .collect();
    let mut text = serde_json::to_string(&sorted).map_err(|e| e.to_string())?;
    // Keep the data 8-byte aligned, as the safetensors writer does (padding with spaces).
    while (8 + text.len()) % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;

    use super::*;

    #[test]
    fn equal_contents_give_equal_bytes_and_a_readable_file() {
        let a_bytes: Vec<u8> = [1f32, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b_bytes = 7i64.to_le_bytes();
        let a = TensorView::new(Dtype::F32, vec![3], &a_bytes).unwrap();
        let b = TensorView::new(Dtype::I64, vec![1], &b_bytes).unwrap();
        let meta = || (0..20).map(|i| (format!("key{i}"), format!("value{i}"))).collect::<HashMap<_, _>>();
        let first = safetensors_bytes([("a", a.clone()), ("b", b.clone())], meta()).unwrap();
        for _ in 0..5 {
            // Fresh HashMaps iterate in other orders; the bytes stay the same.
            assert_eq!(safetensors_bytes([("b", b.clone()), ("a", a.clone())], meta()).unwrap(), first);
        }
        let loaded = safetensors::SafeTensors::deserialize(&first).unwrap();
        assert_eq!(loaded.tensor("a").unwrap().data(), a_bytes.as_slice());
        let (_, m) = safetensors::SafeTensors::read_metadata(&first).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap()["key13"], "value13");
    }
}
