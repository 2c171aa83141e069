//! Target b: bytes a peer sends, to the real C-STORE / C-ECHO SCP (`ingest::scp::serve`) over a
//! loopback connection: dicom-ul's A-ASSOCIATE-RQ negotiation with our AE title check, abstract
//! and transfer syntaxes, then the P-DATA loop, the command sets (`net::dimse`), the received
//! file written to the inbox and the pre-scan that decides its answer. The options are the
//! defaults of `[dicom]` and `[decode]`; the inbox is on tmpfs when there is one.
//!
//! One input is one association: the bytes are written, the write side is shut, and the
//! answers are read until the SCP closes the connection. A hang is an SCP that neither reads on
//! nor closes. After each input nothing may exist outside `<inbox>/net/`.

use plateqc::decode::{check_data_set, DecodePolicy, SUPPORTED_TRANSFER_SYNTAXES};
use plateqc::ingest::scp::{self, DicomOptions, Scp, ScpStats};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Harness {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    root: PathBuf,
    inbox: PathBuf,
    _cancel: CancellationToken,
}

/// Made on the first input, in the process AFL forked (threads and sockets do not survive the
/// fork server's fork).
fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let root = base.join(format!("plateqc-fuzz-scp-{}", std::process::id()));
        let inbox = root.join("inbox");
        std::fs::create_dir_all(&inbox).expect("inbox");
        let decode = DecodePolicy::default();
        let (depth, limit) = (decode.max_sequence_depth, decode.max_file_bytes as usize);
        let options = DicomOptions {
            listen: "127.0.0.1:0".into(),
            ..DicomOptions::default()
        };
        let scp = Arc::new(Scp {
            options,
            inbox: inbox.clone(),
            classes: plateqc::net::accepted_classes(&decode.modalities),
            transfer_syntaxes: SUPPORTED_TRANSFER_SYNTAXES.to_vec(),
            max_object_bytes: decode.max_file_bytes,
            // As the daemon builds it without decode isolation (see `watch::start_receiver`).
            check: Arc::new(move |bytes: &[u8]| {
                check_data_set(bytes, depth, limit).map(|u| (u.sop_class, u.sop_instance))
            }),
            stats: Arc::new(ScpStats::default()),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cancel = CancellationToken::new();
        let addr = rt
            .block_on(scp::serve(scp, cancel.clone()))
            .expect("listen");
        Harness {
            rt,
            addr,
            root,
            inbox,
            _cancel: cancel,
        }
    })
}

fn main() {
    // For triage outside AFL: `PLATEQC_FUZZ_SHOW=1 scp_association < input` prints what the
    // SCP answered and what it stored.
    let show = std::env::var_os("PLATEQC_FUZZ_SHOW").is_some();
    afl::fuzz!(|data: &[u8]| {
        let h = harness();
        h.rt.block_on(async {
            let mut socket = tokio::net::TcpStream::connect(h.addr)
                .await
                .expect("connect to the SCP");
            let (mut r, mut w) = socket.split();
            let send = async {
                // The SCP may abort before it has read everything: a reset is an answer.
                let _ = w.write_all(data).await;
                let _ = w.shutdown().await;
            };
            let receive = async {
                let mut answers = Vec::new();
                let read = r.read_to_end(&mut answers).await;
                if show {
                    eprintln!(
                        "answered {} bytes ({read:?}): {answers:02x?}",
                        answers.len()
                    );
                }
            };
            tokio::join!(send, receive);
        });
        // Whatever the peer named, the SCP writes only under <inbox>/net/.
        for e in std::fs::read_dir(&h.root).expect("root").flatten() {
            assert_eq!(e.file_name(), "inbox", "written outside the inbox");
        }
        for e in std::fs::read_dir(&h.inbox).expect("inbox").flatten() {
            assert_eq!(e.file_name(), "net", "written beside <inbox>/net");
        }
        if show {
            for d in std::fs::read_dir(h.inbox.join("net"))
                .into_iter()
                .flatten()
                .flatten()
            {
                for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                    eprintln!("stored {}", f.path().display());
                }
            }
        }
        let _ = std::fs::remove_dir_all(h.inbox.join("net"));
    });
}
