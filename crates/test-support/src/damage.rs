//! Damaging documents for property tests: the ways a stored or sent JSON text goes wrong, so that
//! parsers and the daemon can be shown to refuse each with a clear error and never panic.

/// Damages a text: truncation, a replaced byte, a duplicated slice or an inserted fragment,
/// chosen by `how`, at byte `at` (taken modulo the length), with `byte` as the new byte or the
/// choice of fragment.
pub fn damage(text: &str, how: u8, at: usize, byte: u8) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let at = at % (bytes.len() + 1);
    match how % 4 {
        0 => bytes.truncate(at),
        1 if !bytes.is_empty() => {
            let last = bytes.len() - 1;
            bytes[at.min(last)] = byte;
        }
        2 => {
            let slice = bytes[at..].iter().take(40).copied().collect::<Vec<_>>();
            bytes.splice(at..at, slice);
        }
        _ => {
            let fragments: [&[u8]; 6] = [b"null", b"\"x\"", b"-1", b"{}", b"[]", b"\"\\u0000\""];
            bytes.splice(at..at, fragments[usize::from(byte) % 6].iter().copied());
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
