use super::stream::take_complete;

#[test]
fn stream_holds_back_incomplete_characters() {
    let mut buf = "h€".as_bytes()[..2].to_vec(); // 'h' + first byte of '€'
    assert_eq!(take_complete(&mut buf), "h");
    assert_eq!(buf.len(), 1);
    buf.extend_from_slice(&"€".as_bytes()[1..]);
    assert_eq!(take_complete(&mut buf), "€");
    assert!(buf.is_empty());
}

#[test]
fn stream_replaces_invalid_bytes_and_continues() {
    let mut buf = vec![b'a', 0xff, b'b'];
    assert_eq!(take_complete(&mut buf), "a\u{FFFD}b");
    assert!(buf.is_empty());
}
