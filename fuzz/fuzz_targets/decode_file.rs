//! Target a: the bytes of a file, through exactly what a decode worker does with them
//! (`decode::worker::decode_bytes`: pre-scan, dicom-rs, pixel decode, the model tensor and the
//! display image, and the header a refusal still carries), in this process, with the limits
//! of the default `[decode]` policy. Run it under `afl-fuzz -m 4096` for the worker's address
//! space cap (`worker_memory_mb`); the worker's CPU budget (`worker_cpu_secs`) is longer than
//! any useful `-t`, so a hang here is anything slower than `-t`.
//!
//! The worker also serializes what it answers; the header is serialized here the same way.

use plateqc::decode::preprocess::{Input, Psp};
use plateqc::decode::worker::{decode_bytes, Refused};
use plateqc::decode::{DecodePolicy, Want};

/// The input size of the bundled model (`models/plateqc.onnx`, `plateqc.input_size`).
const INPUT_SIZE: usize = 256;

fn main() {
    let policy = DecodePolicy::default();
    // For triage outside AFL: `PLATEQC_FUZZ_SHOW=1 decode_file < input` prints the outcome.
    let show = std::env::var_os("PLATEQC_FUZZ_SHOW").is_some();
    afl::fuzz!(|data: &[u8]| {
        // Both preprocessings, chosen by the input's length so that a finding replays as found.
        let psp = if data.len() % 2 == 0 {
            Psp::V1
        } else {
            Psp::V2
        };
        let want = Want {
            input: Input {
                size: INPUT_SIZE,
                psp,
            },
            display: true,
        };
        let answer = decode_bytes(data, &policy, want);
        if show {
            match &answer {
                Ok(d) => eprintln!("decoded {:?}", d.header),
                Err(r) => eprintln!("refused: {}", r.error),
            }
        }
        match answer {
            Ok(d) => {
                assert_eq!(d.tensor.len(), 2 * INPUT_SIZE * INPUT_SIZE);
                assert_eq!(
                    d.gray.len(),
                    d.header.rows as usize * d.header.columns as usize
                );
                let _ = serde_json::to_vec(&d.header).expect("header serializes");
            }
            Err(Refused { error, header }) => {
                let _ = serde_json::to_vec(&error).expect("error serializes");
                if let Some(h) = header {
                    let _ = serde_json::to_vec(&h).expect("header serializes");
                }
            }
        }
    });
}
