//! Wire format, authentication and the foca codec.
//!
//! Every UDP datagram is `kind (1) || cluster (16) || sender node id (8, BE) || body || tag
//! (32)` where `tag = HMAC-SHA256(key, everything before it)` and `key = derive_key(join
//! token)`. The token itself never goes on the wire. The cluster id (zeros while a joiner
//! has not learned it) and the sender's node id let a receiver refuse a node of another
//! cluster, or a second node claiming a name, before foca or our handlers see the body.
//! Kinds:
//! - [`KIND_FOCA`]: body is a foca payload (foca's own framing, encoded by [`FocaCodec`]);
//! - [`KIND_CONTROL`]: body is a bincode [`Control`] message of our own (join handshake and
//!   metadata push/pull), which foca never sees.
//!
//! Encoding everywhere is bincode 2 (serde, standard config, decode limited to 64 KiB).
//! Threads: none. May call: nothing.

use bytes::{Buf, BufMut};
use hmac::{KeyInit, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::cluster::identity::{ClusterTag, NodeIdentity};
use crate::cluster::meta::MetaRecord;
use crate::cluster::ClusterError;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const KIND_FOCA: u8 = 1;
pub const KIND_CONTROL: u8 = 2;
pub const TAG_LEN: usize = 32;
const HEADER_LEN: usize = 1 + 16 + 8;
/// Bytes a sealed datagram adds to its body.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
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
    /// "You may not take part, and why": another cluster's data, a name another node owns.
    Refused { reason: String },
}

/// Who sent a datagram: its cluster (zeros: not joined yet) and its node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    pub cluster: ClusterTag,
    pub node_id: u64,
}

/// An authenticated datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Foca(&'a [u8]),
    Control(Control),
}

pub(crate) fn seal(key: &[u8; 32], sender: &Sender, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + OVERHEAD);
    out.push(kind);
    out.extend_from_slice(&sender.cluster);
    out.extend_from_slice(&sender.node_id.to_be_bytes());
    out.extend_from_slice(body);
    let mut mac = mac_with(key);
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// Seals a foca payload into a datagram.
pub fn seal_foca(key: &[u8; 32], sender: &Sender, payload: &[u8]) -> Vec<u8> {
    seal(key, sender, KIND_FOCA, payload)
}

/// Seals one of our control messages into a datagram.
pub fn seal_control(
    key: &[u8; 32],
    sender: &Sender,
    msg: &Control,
) -> Result<Vec<u8>, ClusterError> {
    Ok(seal(key, sender, KIND_CONTROL, &encode(msg)?))
}

/// Checks the tag (in constant time) and splits a datagram. Fails on a missing or bad tag,
/// before anything in it is decoded.
pub fn open<'a>(key: &[u8; 32], data: &'a [u8]) -> Result<(Sender, Packet<'a>), ClusterError> {
    if data.len() < OVERHEAD {
        return Err(ClusterError::ShortPacket(data.len()));
    }
    let (signed, tag) = data.split_at(data.len() - TAG_LEN);
    let mut mac = mac_with(key);
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| ClusterError::BadTag)?;
    let (head, body) = signed.split_at(HEADER_LEN);
    let sender = Sender {
        cluster: head[1..17].try_into().expect("16 bytes"),
        node_id: u64::from_be_bytes(head[17..25].try_into().expect("8 bytes")),
    };
    let packet = match head[0] {
        KIND_FOCA => Packet::Foca(body),
        KIND_CONTROL => Packet::Control(decode(body)?),
        other => return Err(ClusterError::UnknownKind(other)),
    };
    Ok((sender, packet))
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

    const SENDER: Sender = Sender {
        cluster: [7; 16],
        node_id: 42,
    };

    #[test]
    fn sealed_packets_open_with_the_same_key_only() {
        let key = derive_key("t");
        let pkt = seal_foca(&key, &SENDER, b"hello foca");
        assert_eq!(
            open(&key, &pkt).unwrap(),
            (SENDER, Packet::Foca(b"hello foca"))
        );
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
        let pkt = seal_control(&key, &SENDER, &msg).unwrap();
        assert_eq!(open(&key, &pkt).unwrap(), (SENDER, Packet::Control(msg)));
        let hello = Control::Hello { from: ident() };
        let pkt = seal_control(&key, &SENDER, &hello).unwrap();
        assert_eq!(open(&key, &pkt).unwrap(), (SENDER, Packet::Control(hello)));
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
