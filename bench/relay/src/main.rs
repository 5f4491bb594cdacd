//! A bare byte relay, the floor under any proxy's CPU per transaction (issue 18).
//!
//! `relay MODE LISTEN SERVER` accepts TCP clients on `LISTEN` and gives each its own
//! connection to `SERVER`, then copies bytes both ways and nothing else: no parsing, no pool,
//! no login of its own (the client logs in to the server through it). One thread.
//!
//! - `epoll`: level-triggered epoll; one `recv` per readiness and one `send` to the peer, the
//!   system calls every event-loop proxy (PgBouncer, poolguard on tokio) makes per message.
//! - `uring`: io_uring with one receive always posted per socket; a completed receive posts
//!   the send to the peer, a completed send posts the next receive. The ring is set up for one
//!   issuer with deferred task work, so completions are reaped only when the loop enters the
//!   kernel to submit, one `io_uring_enter` per batch instead of a call per operation.
//! - `uring-epoll`: the same operations on a ring without deferred task work, but the loop
//!   sleeps in `epoll_wait` on the ring's descriptor and only submits without waiting: how a
//!   ring fits beside an epoll-based runtime such as tokio (the runtime parks in `epoll_wait`;
//!   what its tasks queued on the ring is submitted before it parks), two calls per batch.
//!
//! It is an experiment, not a proxy: a client's bytes go to the server unread, the epoll loop
//! finishes a send that the kernel took only in part by blocking (small request-response
//! traffic on loopback never meets it), and errors end the pair silently. `bench/relay.py` measures it
//! beside PgBouncer and poolguard.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

/// Bytes read at a time per direction (pgbench's messages are far smaller).
const BUF: usize = 16 * 1024;

/// One client and its server connection: side 0 is the client, side 1 the server; `bufs[s]`
/// holds what was last read from side `s`.
struct Pair {
    socks: [TcpStream; 2],
    bufs: [Box<[u8]>; 2],
    /// io_uring only: operations posted and not yet completed; a dead pair's slot is freed
    /// when this reaches zero (the kernel still holds its buffers until then).
    inflight: u32,
    dead: bool,
    /// io_uring only: the part of `bufs[s]` the send posted for side `s` covers.
    sending: [(usize, usize); 2],
}

impl Pair {
    fn open(client: TcpStream, server: &str) -> io::Result<Pair> {
        let upstream = TcpStream::connect(server)?;
        for s in [&client, &upstream] {
            s.set_nodelay(true)?;
        }
        Ok(Pair {
            socks: [client, upstream],
            bufs: [vec![0; BUF].into_boxed_slice(), vec![0; BUF].into_boxed_slice()],
            inflight: 0,
            dead: false,
            sending: [(0, 0); 2],
        })
    }

    fn fd(&self, side: usize) -> RawFd {
        self.socks[side].as_raw_fd()
    }

    fn shutdown(&self) {
        for s in &self.socks {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Slots of pairs, reused after a pair ends.
#[derive(Default)]
struct Pairs {
    slots: Vec<Option<Pair>>,
    free: Vec<usize>,
}

impl Pairs {
    fn insert(&mut self, p: Pair) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(p);
                i
            }
            None => {
                self.slots.push(Some(p));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) {
        if self.slots[i].take().is_some() {
            self.free.push(i);
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: relay epoll|uring|uring-epoll LISTEN_ADDR SERVER_ADDR");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(&args[2])?;
    match args[1].as_str() {
        "epoll" => epoll::run(listener, &args[3]),
        "uring" => uring::run(listener, &args[3], false),
        "uring-epoll" => uring::run(listener, &args[3], true),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2)
        }
    }
}

/// Sends what is left of `buf` by blocking: the experiment's only back-pressure path.
fn finish_send(sock: &TcpStream, buf: &[u8]) -> io::Result<()> {
    sock.set_nonblocking(false)?;
    let r = (&*sock).write_all(buf);
    sock.set_nonblocking(true)?;
    r
}

mod epoll {
    use super::*;

    const LISTENER: u64 = u64::MAX;

    fn ctl(ep: RawFd, op: i32, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// An epoll set watching `fd` for input (token: the listener's).
    pub fn epoll_on(fd: RawFd) -> io::Result<RawFd> {
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        ctl(ep, libc::EPOLL_CTL_ADD, fd, LISTENER)?;
        Ok(ep)
    }

    pub fn run(listener: TcpListener, server: &str) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let ep = epoll_on(listener.as_raw_fd())?;
        let mut pairs = Pairs::default();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                let token = ev.u64;
                if token == LISTENER {
                    while let Ok((client, _)) = listener.accept() {
                        let Ok(pair) = Pair::open(client, server) else { continue };
                        for s in &pair.socks {
                            s.set_nonblocking(true)?;
                        }
                        let fds = [pair.fd(0), pair.fd(1)];
                        let i = pairs.insert(pair);
                        for (side, fd) in fds.into_iter().enumerate() {
                            ctl(ep, libc::EPOLL_CTL_ADD, fd, (i * 2 + side) as u64)?;
                        }
                    }
                    continue;
                }
                let (i, side) = ((token / 2) as usize, (token % 2) as usize);
                // A pair that ended earlier in this batch (its slot may even hold a new pair:
                // then the read finds nothing and waits for the next event).
                let Some(pair) = pairs.slots.get_mut(i).and_then(Option::as_mut) else {
                    continue;
                };
                let fd = pair.fd(side);
                let got = unsafe {
                    libc::recv(fd, pair.bufs[side].as_mut_ptr().cast(), BUF, 0)
                };
                if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                    continue;
                }
                if got <= 0 || forward(pair, side, got as usize).is_err() {
                    pairs.remove(i); // dropping the sockets closes them and leaves the epoll set
                }
            }
        }
    }

    fn forward(pair: &Pair, side: usize, len: usize) -> io::Result<()> {
        let peer = pair.fd(1 - side);
        let buf = &pair.bufs[side][..len];
        let sent = unsafe { libc::send(peer, buf.as_ptr().cast(), len, libc::MSG_NOSIGNAL) };
        if sent < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            return finish_send(&pair.socks[1 - side], buf);
        }
        if (sent as usize) < len {
            return finish_send(&pair.socks[1 - side], &buf[sent as usize..]);
        }
        Ok(())
    }
}

mod uring {
    use super::*;
    use super::epoll::epoll_on;
    use io_uring::{opcode, squeue, types, IoUring};

    /// user_data: the pair's slot, the side, and the operation, packed.
    const ACCEPT: u64 = u64::MAX;
    const RECV: u64 = 0;
    const SEND: u64 = 1;

    fn tag(i: usize, side: usize, op: u64) -> u64 {
        ((i as u64) << 2) | ((side as u64) << 1) | op
    }

    struct Loop {
        ring: IoUring,
        pairs: Pairs,
    }

    impl Loop {
        fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
            // A full queue is submitted first; the loop never has more than three operations
            // per pair posted, and the ring is sized well above a benchmark's clients.
            while unsafe { self.ring.submission().push(&e) }.is_err() {
                self.ring.submit()?;
            }
            Ok(())
        }

        fn post_recv(&mut self, i: usize, side: usize) -> io::Result<()> {
            let p = self.pairs.slots[i].as_mut().expect("a posted pair is live");
            p.inflight += 1;
            let e = opcode::Recv::new(types::Fd(p.fd(side)), p.bufs[side].as_mut_ptr(), BUF as u32)
                .build()
                .user_data(tag(i, side, RECV));
            self.push(e)
        }

        fn post_send(&mut self, i: usize, side: usize, from: usize, to: usize) -> io::Result<()> {
            let p = self.pairs.slots[i].as_mut().expect("a posted pair is live");
            p.inflight += 1;
            p.sending[side] = (from, to);
            let buf = &p.bufs[side][from..to];
            let e = opcode::Send::new(types::Fd(p.fd(1 - side)), buf.as_ptr(), buf.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(tag(i, side, SEND));
            self.push(e)
        }

        fn post_accept(&mut self, listener: &TcpListener) -> io::Result<()> {
            let e = opcode::Accept::new(
                types::Fd(listener.as_raw_fd()),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .build()
            .user_data(ACCEPT);
            self.push(e)
        }

        /// Marks a pair dead and wakes its posted operations; the slot goes when they are in.
        fn end(&mut self, i: usize) {
            if let Some(p) = self.pairs.slots[i].as_mut() {
                if !p.dead {
                    p.dead = true;
                    p.shutdown();
                }
                if p.inflight == 0 {
                    self.pairs.remove(i);
                }
            }
        }
    }

    /// `beside_epoll`: sleep in `epoll_wait` on the ring's descriptor and submit without
    /// waiting (see the module doc), instead of one `io_uring_enter` that submits and waits.
    pub fn run(listener: TcpListener, server: &str, beside_epoll: bool) -> io::Result<()> {
        let ring = if beside_epoll {
            // Deferred task work would post completions only inside io_uring_enter, which
            // this loop does not sleep in.
            IoUring::builder().setup_single_issuer().build(4096)?
        } else {
            IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(4096)?
        };
        let ep = if beside_epoll { Some(epoll_on(ring.as_raw_fd())?) } else { None };
        let mut lp = Loop { ring, pairs: Pairs::default() };
        lp.post_accept(&listener)?;
        let mut done: Vec<(u64, i32)> = Vec::with_capacity(512);
        loop {
            let entered = match ep {
                None => lp.ring.submit_and_wait(1),
                Some(ep) => {
                    let r = if lp.ring.submission().is_empty() { Ok(0) } else { lp.ring.submit() };
                    if r.is_ok() && lp.ring.completion().is_empty() {
                        let mut ev = libc::epoll_event { events: 0, u64: 0 };
                        unsafe { libc::epoll_wait(ep, &mut ev, 1, -1) };
                    }
                    r
                }
            };
            match entered {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            done.clear();
            done.extend(lp.ring.completion().map(|c| (c.user_data(), c.result())));
            for &(ud, res) in &done {
                if ud == ACCEPT {
                    lp.post_accept(&listener)?;
                    if res < 0 {
                        continue;
                    }
                    let client = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(res) };
                    let Ok(pair) = Pair::open(client, server) else { continue };
                    let i = lp.pairs.insert(pair);
                    lp.post_recv(i, 0)?;
                    lp.post_recv(i, 1)?;
                    continue;
                }
                let (i, side, op) = ((ud >> 2) as usize, ((ud >> 1) & 1) as usize, ud & 1);
                let p = lp.pairs.slots[i].as_mut().expect("a completed operation's pair is live");
                p.inflight -= 1;
                if p.dead || res <= 0 {
                    lp.end(i);
                    continue;
                }
                if op == RECV {
                    lp.post_send(i, side, 0, res as usize)?;
                } else {
                    // A send that went in part posts the rest before the next receive.
                    let (from, to) = p.sending[side];
                    if from + (res as usize) < to {
                        lp.post_send(i, side, from + res as usize, to)?;
                    } else {
                        lp.post_recv(i, side)?;
                    }
                }
            }
        }
    }
}
