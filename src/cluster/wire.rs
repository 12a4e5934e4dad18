//! Wire format, authentication and the foca codec.
//!
//! Every UDP datagram is `kind (1 byte) || body || tag (32 bytes)` where
//! `tag = HMAC-SHA256(key, kind || body)` and `key = derive_key(join token)`. The token itself
//! never goes on the wire. Kinds:
//! - [`KIND_FOCA`]: body is a foca payload (foca's own framing, encoded by [`FocaCodec`]);
//! - [`KIND_CONTROL`]: body is a bincode [`Control`] message of our own (join handshake and
//!   metadata push/pull), which foca never sees.
//!
//! Encoding everywhere is bincode 2 (serde, standard config, decode limited to 64 KiB).
//! Threads: none. May call: nothing.

use bytes::{Buf, BufMut};
use hmac::{KeyInit, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::cluster::identity::NodeIdentity;
use crate::cluster::meta::MetaRecord;
use crate::cluster::ClusterError;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const KIND_FOCA: u8 = 1;
pub const KIND_CONTROL: u8 = 2;
pub const TAG_LEN: usize = 32;
/// Bytes a sealed datagram adds to its body.
pub const OVERHEAD: usize = 1 + TAG_LEN;
/// Label mixed into the key derivation; bump it to change the wire format incompatibly.
const MAX_DECODE: usize = 64 * 1024;

/// The gossip key of a cluster: HMAC-SHA256(token, "omnicloud-gossip-v1").
pub fn derive_key(token: &str) -> [u8; 32] {
    super::transport::derive_key(token, "gossip")
}

fn mac_with(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Our own messages, beside foca's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// "Who is there?" sent to a seed address; answered by `HelloAck`.
    Hello { from: NodeIdentity },
    /// The seed's identity, so the joiner can foca-announce to it.
    HelloAck { identity: NodeIdentity },
    /// A metadata record pushed directly.
    Meta(MetaRecord),
    /// Anti-entropy: `(name, incarnation, version)` of metadata records the sender holds,
    /// and identities it saw go down recently (SWIM's dissemination of Down has a tail).
    Digest {
        meta: Vec<(String, u64, u64)>,
        down: Vec<NodeIdentity>,
    },
    /// Asks for the records of these names.
    MetaRequest(Vec<String>),
}

/// An authenticated datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Foca(&'a [u8]),
    Control(Control),
}

fn seal(key: &[u8; 32], kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + OVERHEAD);
    out.push(kind);
    out.extend_from_slice(body);
    let mut mac = mac_with(key);
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// Seals a foca payload into a datagram.
pub fn seal_foca(key: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    seal(key, KIND_FOCA, payload)
}

/// Seals one of our control messages into a datagram.
pub fn seal_control(key: &[u8; 32], msg: &Control) -> Result<Vec<u8>, ClusterError> {
    Ok(seal(key, KIND_CONTROL, &encode(msg)?))
}

/// Checks the tag (in constant time) and splits a datagram. Fails on a missing or bad tag.
pub fn open<'a>(key: &[u8; 32], data: &'a [u8]) -> Result<Packet<'a>, ClusterError> {
    if data.len() < OVERHEAD {
        return Err(ClusterError::ShortPacket(data.len()));
    }
    let (signed, tag) = data.split_at(data.len() - TAG_LEN);
    let mut mac = mac_with(key);
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| ClusterError::BadTag)?;
    let (kind, body) = (signed[0], &signed[1..]);
    match kind {
        KIND_FOCA => Ok(Packet::Foca(body)),
        KIND_CONTROL => Ok(Packet::Control(decode(body)?)),
        other => Err(ClusterError::UnknownKind(other)),
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE>()
}

/// bincode-encodes any serde value.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ClusterError> {
    bincode::serde::encode_to_vec(v, config()).map_err(ClusterError::Encode)
}

/// bincode-decodes a whole buffer.
pub fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T, ClusterError> {
    Ok(decode_prefix(data)?.0)
}

/// Decodes one value from the front of `data`, returning it and the bytes it used.
fn decode_prefix<T: DeserializeOwned>(data: &[u8]) -> Result<(T, usize), ClusterError> {
    bincode::serde::decode_from_slice(data, config()).map_err(ClusterError::Decode)
}

/// foca's codec: bincode 2 for headers and members.
#[derive(Debug, Default, Clone, Copy)]
pub struct FocaCodec;

impl FocaCodec {
    fn put<T: Serialize>(v: &T, mut buf: impl BufMut) -> Result<(), ClusterError> {
        let bytes = encode(v)?;
        // foca needs the buffer untouched when an item does not fit.
        if buf.remaining_mut() < bytes.len() {
            return Err(ClusterError::BufferFull);
        }
        buf.put_slice(&bytes);
        Ok(())
    }

    fn take<T: DeserializeOwned>(mut buf: impl Buf) -> Result<T, ClusterError> {
        let (v, used) = decode_prefix(buf.chunk())?;
        buf.advance(used);
        Ok(v)
    }
}

impl foca::Codec<NodeIdentity> for FocaCodec {
    type Error = ClusterError;

    fn encode_header(
        &mut self,
        header: &foca::Header<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), ClusterError> {
        Self::put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<foca::Header<NodeIdentity>, ClusterError> {
        Self::take(buf)
    }

    fn encode_member(
        &mut self,
        member: &foca::Member<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), ClusterError> {
        Self::put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<foca::Member<NodeIdentity>, ClusterError> {
        Self::take(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Codec;
    use std::net::SocketAddr;

    fn ident() -> NodeIdentity {
        NodeIdentity::new(
            "node-1",
            SocketAddr::from(([127, 0, 0, 1], 7946)),
            1_700_000_000_000,
        )
    }

    #[test]
    fn key_depends_on_token_and_is_not_the_token() {
        let a = derive_key("token-a");
        assert_eq!(a, derive_key("token-a"));
        assert_ne!(a, derive_key("token-b"));
        assert_ne!(&a[..7], b"token-a");
    }

    #[test]
    fn sealed_packets_open_with_the_same_key_only() {
        let key = derive_key("t");
        let pkt = seal_foca(&key, b"hello foca");
        assert_eq!(open(&key, &pkt).unwrap(), Packet::Foca(b"hello foca"));
        assert!(matches!(
            open(&derive_key("u"), &pkt),
            Err(ClusterError::BadTag)
        ));

        let mut tampered = pkt.clone();
        tampered[3] ^= 1;
        assert!(matches!(open(&key, &tampered), Err(ClusterError::BadTag)));
        assert!(matches!(
            open(&key, b"short"),
            Err(ClusterError::ShortPacket(5))
        ));
        assert!(matches!(
            open(&key, &pkt[..pkt.len() - 1]),
            Err(ClusterError::BadTag)
        ));
    }

    #[test]
    fn control_messages_round_trip() {
        let key = derive_key("t");
        let msg = Control::Digest {
            meta: vec![("a".into(), 1, 2), ("b".into(), 3, 4)],
            down: vec![ident()],
        };
        let pkt = seal_control(&key, &msg).unwrap();
        assert_eq!(open(&key, &pkt).unwrap(), Packet::Control(msg));
        let hello = Control::Hello { from: ident() };
        let pkt = seal_control(&key, &hello).unwrap();
        assert_eq!(open(&key, &pkt).unwrap(), Packet::Control(hello));
    }

    #[test]
    fn codec_round_trips_and_refuses_to_overflow() {
        let mut codec = FocaCodec;
        let header = foca::Header {
            src: ident(),
            src_incarnation: 3,
            dst: ident(),
            message: foca::Message::Ping(9),
        };
        let mut buf = Vec::new();
        codec.encode_header(&header, &mut buf).unwrap();
        let member = foca::Member::new(ident(), 2, foca::State::Suspect);
        codec.encode_member(&member, &mut buf).unwrap();

        let mut rd = &buf[..];
        assert_eq!(codec.decode_header(&mut rd).unwrap(), header);
        assert_eq!(codec.decode_member(&mut rd).unwrap(), member);
        assert!(rd.is_empty());

        let mut small = Vec::new();
        let mut limited = (&mut small).limit(4);
        assert!(codec.encode_member(&member, &mut limited).is_err());
        assert!(small.is_empty(), "buffer left clean");
    }
}
