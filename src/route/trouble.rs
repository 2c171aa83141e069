//! Why a destination does not take what plateqc sends, in the terms an operator acts on: each
//! failure to associate or to store is classified once, with the hint that names the setting
//! to look at. The forwarder logs a destination's trouble when it starts or changes (not once
//! per plate), `check-config --probe` prints it, and the outbox keeps it in `last_error`.

use crate::net::scu::ScuError;
use dicom_ul::association::Error as AssocError;
use dicom_ul::pdu::{AssociationRJServiceUserReason, AssociationRJSource};
use std::io::ErrorKind;

/// What went wrong with one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// The host name in `address` does not resolve.
    Unresolved(String),
    /// The host answered, but nothing listens on that port.
    Refused,
    /// No answer within `connect_timeout_secs` (host down, firewall, wrong address).
    Unreachable,
    /// The destination refused the association because it does not know its own AE title as
    /// we called it.
    CalledAeRejected,
    /// The destination refused the association because it does not know us.
    CallingAeRejected,
    /// Refused for another reason (as the peer put it).
    Rejected(String),
    /// The peer accepted no presentation context: it stores none of these SOP classes in any
    /// offered transfer syntax.
    NoContext,
    /// The association broke or was aborted mid-way.
    Broken(String),
    /// A C-STORE or C-ECHO was answered with a failure status.
    Status { code: u16, comment: String },
    /// A DICOMweb server answered with this HTTP status.
    Http { status: u16 },
    /// The TLS handshake with a DICOMweb server failed (certificate, CA, host name).
    Tls(String),
    /// An HTTP request broke off without an answer.
    RequestFailed(String),
    /// The destination's own settings cannot be used (a secret or CA file unreadable).
    Setup(String),
}

impl Trouble {
    /// Classifies a failure to establish an association.
    pub fn from_association(e: &AssocError) -> Trouble {
        match e {
            AssocError::ToAddress { source, .. } => Trouble::Unresolved(source.to_string()),
            AssocError::Connect { source, .. } => from_io(source),
            AssocError::Timeout { .. } => Trouble::Unreachable,
            AssocError::Rejected { association_rj, .. } => match &association_rj.source {
                AssociationRJSource::ServiceUser(
                    AssociationRJServiceUserReason::CalledAETitleNotRecognized,
                ) => Trouble::CalledAeRejected,
                AssociationRJSource::ServiceUser(
                    AssociationRJServiceUserReason::CallingAETitleNotRecognized,
                ) => Trouble::CallingAeRejected,
                other => Trouble::Rejected(other.to_string()),
            },
            AssocError::NoAcceptedPresentationContexts { .. } => Trouble::NoContext,
            other => Trouble::Broken(other.to_string()),
        }
    }

    /// Classifies a broken exchange on an established association.
    pub fn from_scu(e: &ScuError) -> Trouble {
        match e {
            ScuError::Association(a) => Trouble::from_association(a),
            other => Trouble::Broken(other.to_string()),
        }
    }

    /// A short account of the failure itself.
    pub fn describe(&self) -> String {
        match self {
            Trouble::Unresolved(why) => format!("the host name does not resolve ({why})"),
            Trouble::Refused => "connection refused".into(),
            Trouble::Unreachable => "no answer (timed out)".into(),
            Trouble::CalledAeRejected => {
                "association rejected: called AE title not recognised".into()
            }
            Trouble::CallingAeRejected => {
                "association rejected: calling AE title not recognised".into()
            }
            Trouble::Rejected(why) => format!("association rejected: {why}"),
            Trouble::NoContext => "no presentation context accepted".into(),
            Trouble::Broken(why) => format!("association broken: {why}"),
            Trouble::Status { code, comment } if comment.is_empty() => {
                format!("status {code:#06x} ({})", status_meaning(*code))
            }
            Trouble::Status { code, comment } => {
                format!("status {code:#06x} ({}): {comment}", status_meaning(*code))
            }
            Trouble::Http { status } => format!("HTTP {status} ({})", http_meaning(*status)),
            Trouble::Tls(why) => format!("TLS failed: {why}"),
            Trouble::RequestFailed(why) => format!("request failed: {why}"),
            Trouble::Setup(why) => format!("settings unusable: {why}"),
        }
    }

    /// What to check, naming the settings involved.
    pub fn hint(&self, destination: &str, called: &str, calling: &str, address: &str) -> String {
        match self {
            Trouble::Unresolved(_) => {
                format!("check the host in [forward] destination {destination} address {address:?}")
            }
            Trouble::Refused => format!(
                "nothing listens at {address}: check the port of destination {destination} and \
                 that the PACS is running"
            ),
            Trouble::Unreachable => format!(
                "check the address {address} of destination {destination}, the network and any \
                 firewall (connect_timeout_secs)"
            ),
            Trouble::CalledAeRejected => format!(
                "the PACS does not call itself {called:?}: set ae_title of destination \
                 {destination} to the AE title configured on the PACS"
            ),
            Trouble::CallingAeRejected => format!(
                "the PACS does not know plateqc as {calling:?}: register that AE title (with this \
                 host's address) on the PACS, or set [forward] calling_ae_title to the name it \
                 knows ([dicom] ae_title when unset)"
            ),
            Trouble::Rejected(_) => format!(
                "the PACS refused plateqc ({calling:?} calling {called:?}); its log says why"
            ),
            Trouble::NoContext => format!(
                "destination {destination} accepts none of the offered SOP classes and transfer \
                 syntaxes: allow Digital Intra-Oral X-Ray (and Key Object Selection, Secondary \
                 Capture for notes) on the PACS"
            ),
            Trouble::Broken(_) => {
                format!("destination {destination} dropped the association; retried with back-off")
            }
            Trouble::Status { code, .. } => match code >> 8 {
                0xA7 => format!("destination {destination} is out of resources (disk full?)"),
                0x01 | 0x02 => format!(
                    "destination {destination} refuses this SOP class or operation: check its \
                     accepted storage classes"
                ),
                _ => format!("destination {destination} refused the instance; its log says why"),
            },
            Trouble::Http { status } => match status {
                401 | 407 => format!(
                    "the server does not accept the credentials: check username and \
                     password_file (or token_file) of destination {destination}"
                ),
                403 => format!(
                    "the server knows the credentials of destination {destination} but does not \
                     let them store: grant that user the right to store on the server"
                ),
                404 | 405 => format!(
                    "no STOW-RS service at {address}/studies: set url of destination \
                     {destination} to the DICOMweb base (e.g. http://pacs:8042/dicom-web)"
                ),
                413 => format!(
                    "the server of destination {destination} refuses requests this large: raise \
                     its upload limit"
                ),
                500..=599 => format!(
                    "the server of destination {destination} failed; its log says why; retried \
                     with back-off"
                ),
                _ => format!(
                    "destination {destination} did not store the instance; its log says why"
                ),
            },
            Trouble::Tls(_) => format!(
                "check that the host in url {address} matches the server's certificate and that \
                 ca_file of destination {destination} holds the CA that signed it"
            ),
            Trouble::RequestFailed(_) => format!(
                "the connection to destination {destination} broke off; retried with back-off"
            ),
            Trouble::Setup(_) => format!(
                "fix the files named in destination {destination} (password_file, token_file, \
                 ca_file): readable by plateqc, PEM for ca_file"
            ),
        }
    }

    /// Two troubles of the same kind are one state: the log speaks when the kind changes, not
    /// when an error text differs in a detail.
    pub fn same_kind(&self, other: &Trouble) -> bool {
        match (self, other) {
            (Trouble::Status { code: a, .. }, Trouble::Status { code: b, .. }) => a == b,
            (Trouble::Http { status: a }, Trouble::Http { status: b }) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Trouble {
    /// Classifies a failed connection attempt.
    pub fn from_io(e: &std::io::Error) -> Trouble {
        from_io(e)
    }
}

fn from_io(e: &std::io::Error) -> Trouble {
    match e.kind() {
        ErrorKind::ConnectionRefused => Trouble::Refused,
        ErrorKind::TimedOut | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
            Trouble::Unreachable
        }
        // tokio resolves names inside connect; a failed lookup is an untyped error there
        _ if e.to_string().contains("lookup") || e.to_string().contains("resolve") => {
            Trouble::Unresolved(e.to_string())
        }
        _ => Trouble::Broken(e.to_string()),
    }
}

/// HTTP statuses as an operator reads them.
fn http_meaning(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        407 => "proxy authentication required",
        409 => "conflict: not stored",
        413 => "request too large",
        415 => "unsupported media type",
        500..=599 => "server error",
        _ => "unexpected",
    }
}

/// PS3.4 / PS3.7 status classes as an operator reads them.
fn status_meaning(code: u16) -> &'static str {
    match code {
        0x0000 => "success",
        0x0122 => "SOP class not supported",
        0x0211 => "unrecognised operation",
        0x0124 => "not authorised",
        0x0110 => "processing failure",
        c if c >> 8 == 0xA7 => "out of resources",
        c if c >> 8 == 0xA9 => "data set does not match the SOP class",
        c if c >> 12 == 0xC => "cannot understand",
        c if c >> 12 == 0xB => "warning",
        _ => "failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_the_setting_to_check() {
        let refused = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(from_io(&refused), Trouble::Refused);
        assert!(Trouble::Refused
            .hint("pacs", "PACS", "PLATEQC", "10.0.0.5:104")
            .contains("port of destination pacs"));
        let lookup = std::io::Error::other("failed to lookup address information");
        assert!(matches!(from_io(&lookup), Trouble::Unresolved(_)));
        let called = Trouble::CalledAeRejected.hint("pacs", "PACSX", "PLATEQC", "h:104");
        assert!(called.contains("\"PACSX\"") && called.contains("ae_title"));
        let calling = Trouble::CallingAeRejected.hint("pacs", "PACS", "QCNODE", "h:104");
        assert!(calling.contains("\"QCNODE\"") && calling.contains("calling_ae_title"));
    }

    #[test]
    fn statuses_are_one_state_per_code() {
        let full = Trouble::Status {
            code: 0xA700,
            comment: "disk full".into(),
        };
        let full2 = Trouble::Status {
            code: 0xA700,
            comment: "".into(),
        };
        let other = Trouble::Status {
            code: 0x0122,
            comment: "".into(),
        };
        assert!(full.same_kind(&full2));
        assert!(!full.same_kind(&other));
        assert!(!Trouble::Refused.same_kind(&Trouble::Unreachable));
        assert!(full.describe().contains("out of resources"));
        assert!(full.hint("pacs", "", "", "").contains("out of resources"));
        assert!(other.hint("pacs", "", "", "").contains("SOP class"));
    }
}
