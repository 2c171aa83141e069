//! The storage-SCU side of an established association: one C-STORE request, its data set and
//! the response, with every way the exchange can break named. What to send, and what a failure
//! means for the outbox, is the forwarder's business (`route::forward`).

use super::dimse::{self, Command, CommandError};
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::PDataValueType;
use dicom_ul::Pdu;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The association broke or the peer spoke out of turn; the item's fate is unknown.
#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error(transparent)]
    Association(#[from] dicom_ul::association::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("data set in a C-STORE response")]
    DataInResponse,
    #[error("response command too large")]
    ResponseTooLarge,
    #[error("aborted by the destination ({0})")]
    Aborted(String),
    #[error("unexpected {0}")]
    UnexpectedPdu(String),
    #[error("unexpected response {0:#06x}")]
    UnexpectedResponse(u16),
}

/// The largest response command accepted; real ones are ~200 bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Sends one command on presentation context `pc`.
pub async fn send_command(
    assoc: &mut AsyncClientAssociation<TcpStream>,
    pc: u8,
    c: &Command,
) -> Result<(), ScuError> {
    Ok(assoc.send(&c.pdu(pc)).await?)
}

/// Reads the next command the peer sends.
pub async fn receive_response(
    assoc: &mut AsyncClientAssociation<TcpStream>,
) -> Result<Command, ScuError> {
    let mut buf = Vec::new();
    loop {
        match assoc.receive().await? {
            Pdu::PData { data } => {
                for v in data {
                    if v.value_type != PDataValueType::Command {
                        return Err(ScuError::DataInResponse);
                    }
                    buf.extend_from_slice(&v.data);
                    if buf.len() > MAX_RESPONSE_BYTES {
                        return Err(ScuError::ResponseTooLarge);
                    }
                    if v.is_last {
                        return Ok(Command::decode(&buf)?);
                    }
                }
            }
            Pdu::AbortRQ { source } => return Err(ScuError::Aborted(format!("{source:?}"))),
            other => {
                return Err(ScuError::UnexpectedPdu(
                    other.short_description().to_string(),
                ))
            }
        }
    }
}

/// Sends a C-ECHO request on presentation context `pc` (negotiated for the Verification SOP
/// Class) and returns the status the peer answered.
pub async fn c_echo(
    assoc: &mut AsyncClientAssociation<TcpStream>,
    pc: u8,
    message_id: u16,
) -> Result<u16, ScuError> {
    send_command(assoc, pc, &Command::echo_rq(message_id)).await?;
    let rsp = receive_response(assoc).await?;
    if rsp.field != dimse::C_ECHO_RSP || rsp.responded_to != message_id {
        return Err(ScuError::UnexpectedResponse(rsp.field));
    }
    Ok(rsp.status)
}

/// Sends the C-STORE request `rq` with its data set (already in the context's transfer syntax)
/// on presentation context `pc`, and returns the peer's C-STORE response.
pub async fn c_store(
    assoc: &mut AsyncClientAssociation<TcpStream>,
    pc: u8,
    rq: &Command,
    data: &[u8],
) -> Result<Command, ScuError> {
    send_command(assoc, pc, rq).await?;
    {
        let mut w = assoc.send_pdata(pc);
        w.write_all(data).await?;
        w.finish().await?;
    }
    let rsp = receive_response(assoc).await?;
    if rsp.field != dimse::C_STORE_RSP || rsp.responded_to != rq.message_id {
        return Err(ScuError::UnexpectedResponse(rsp.field));
    }
    Ok(rsp)
}
