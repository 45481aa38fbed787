//! Long-lived UDP sockets to one upstream resolver, shared by all queries:
//! two system calls per forwarded query instead of a socket's whole life
//! (bind, connect, send, receive, close, and the poller's bookkeeping).
//!
//! Each query gets a random, unused message ID on one of the sockets; the
//! answer is matched by that ID *and* by its question section, byte for
//! byte, and gets the client's own ID back before it goes out. The sockets
//! are connected, so only the resolver's own datagrams arrive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Sockets per upstream: spreads the 16-bit ID space (and the answers'
/// receive work) over several source ports.
const SOCKETS: usize = 8;
/// Queries waiting on one socket at most; beyond it a query is refused
/// (and the caller tries the next resolver) rather than queued.
const MAX_PENDING: usize = 16_384;

struct Pending {
    client_id: [u8; 2],
    question: Vec<u8>,
    done: oneshot::Sender<Vec<u8>>,
}

struct PoolSocket {
    socket: UdpSocket,
    pending: Mutex<HashMap<u16, Pending>>,
}

/// UDP sockets to one resolver.
pub struct UdpPool {
    sockets: Vec<Arc<PoolSocket>>,
    next: AtomicUsize,
}

impl UdpPool {
    /// Opens the sockets and starts their receivers, which end at shutdown.
    pub async fn connect(addr: SocketAddr, shutdown: &CancellationToken) -> std::io::Result<UdpPool> {
        let mut sockets = Vec::with_capacity(SOCKETS);
        for _ in 0..SOCKETS {
            let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
            let socket = UdpSocket::bind(local).await?;
            socket.connect(addr).await?;
            let s = Arc::new(PoolSocket { socket, pending: Mutex::new(HashMap::new()) });
            tokio::spawn(receive(Arc::clone(&s), shutdown.clone()));
            sockets.push(s);
        }
        Ok(UdpPool { sockets, next: AtomicUsize::new(0) })
    }

    /// Sends a query and waits for its answer (the caller bounds the wait).
    pub async fn exchange(&self, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let Some(question) = question_section(query) else {
            return Err(std::io::Error::other("query without a question section"));
        };
        let s = &self.sockets[self.next.fetch_add(1, Ordering::Relaxed) % self.sockets.len()];
        let (done, wait) = oneshot::channel();
        let id = {
            let mut pending = s.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= MAX_PENDING {
                return Err(std::io::Error::other("too many queries waiting on the upstream"));
            }
            let id = loop {
                let id = random_id();
                if !pending.contains_key(&id) {
                    break id;
                }
            };
            pending.insert(id, Pending { client_id: [query[0], query[1]], question: question.to_vec(), done });
            id
        };
        // Removes the entry however this future ends (answer, error, timeout).
        let _cleanup = Cleanup { socket: s, id };
        let mut rewritten = query.to_vec();
        rewritten[..2].copy_from_slice(&id.to_be_bytes());
        s.socket.send(&rewritten).await?;
        wait.await.map_err(|_| std::io::Error::other("upstream receiver stopped"))
    }
}

struct Cleanup<'a> {
    socket: &'a PoolSocket,
    id: u16,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.socket.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

async fn receive(s: Arc<PoolSocket>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 65535];
    loop {
        let n = tokio::select! {
            r = s.socket.recv(&mut buf) => match r {
                Ok(n) => n,
                // ICMP port unreachable from an earlier send: the waiting
                // query times out and the next resolver is tried.
                Err(_) => continue,
            },
            _ = shutdown.cancelled() => return,
        };
        let answer = &buf[..n];
        if answer.len() < 12 || answer[2] & 0x80 == 0 {
            continue;
        }
        let id = u16::from_be_bytes([answer[0], answer[1]]);
        let mut pending = s.pending.lock().unwrap_or_else(|p| p.into_inner());
        // The same question, byte for byte (case included): an answer with
        // a guessed ID but another question is not this query's answer.
        let matches = pending.get(&id).is_some_and(|p| {
            question_section(answer).is_some_and(|q| q == p.question.as_slice())
                || (answer[4..6] == [0, 0] && answer[3] & 0x0f != 0)
        });
        if !matches {
            continue;
        }
        if let Some(p) = pending.remove(&id) {
            drop(pending);
            let mut out = answer.to_vec();
            out[..2].copy_from_slice(&p.client_id);
            let _ = p.done.send(out);
        }
    }
}

/// The bytes of a message's question section (one question): from the
/// header to the end of QTYPE and QCLASS. Names in a query's question are
/// never compressed, so the section is self-contained.
fn question_section(msg: &[u8]) -> Option<&[u8]> {
    if msg.len() < 12 || msg[4..6] != [0, 1] {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*msg.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xc0 != 0 {
            // A compressed name: compare the two bytes of the pointer.
            at += 2;
            break;
        }
        at += 1 + len;
    }
    msg.get(12..at + 4)
}

/// A message ID from a per-thread generator (SplitMix64) seeded from the
/// operating system once: unpredictable off-path, and no system call per
/// query.
fn random_id() -> u16 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            if getrandom::fill(&mut seed).is_err() {
                // No OS randomness: the time still differs per thread and
                // start, and every answer's question is checked anyway.
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                seed = (t.map(|d| d.as_nanos()).unwrap_or(0) as u64).to_le_bytes();
            }
            u64::from_le_bytes(seed)
        });
    }
    STATE.with(|s| {
        let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u16
    })
}

#[cfg(test)]
mod tests {
    use super::question_section;

    #[test]
    fn question_section_spans_name_type_and_class() {
        let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x03www\x07example\x00\x00\x01\x00\x01");
        assert_eq!(question_section(&q), Some(&q[12..]));
        let mut with_edns = q.clone();
        with_edns.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        assert_eq!(question_section(&with_edns), Some(&q[12..]));
        assert_eq!(question_section(&q[..20]), None);
        let mut two = q.clone();
        two[5] = 2;
        assert_eq!(question_section(&two), None);
    }
}
