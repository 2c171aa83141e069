//! What became of a plate, as types: its verdict and, for a plate that could not be judged, the
//! stage that failed and the kind of failure. Each value maps to the one string the database
//! stores for it (`plates.verdict`, `error_stage`, `error_kind`, read by the `plate_verdicts`
//! view and the reports) and that metrics and logs show; those strings never change.

/// A stored string that names no value of the enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {what}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

/// An enum stored as text: `as_str` gives the stored string, `FromStr` reads it back, `ALL`
/// lists the values; `Display` and `Serialize` use the stored string.
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The string stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::outcome::UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::outcome::UnknownValue {
                        what: stringify!($name),
                        value: other.to_string(),
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use stored_enum;

stored_enum! {
    /// The verdict on a plate.
    pub enum Verdict {
        /// Good enough to read.
        Usable = "usable",
        /// To be taken again; the findings say why.
        Unusable = "unusable",
        /// Not judged: the file could not be read, decoded or explained.
        Error = "error",
    }
}

stored_enum! {
    /// Why a judged plate waits for a person before anything leaves for it (no rejection note,
    /// not forwarded): the verdict is recorded, but the model is not sure enough of it.
    pub enum ReviewReason {
        /// The unusable score lies within `infer.review_margin` log-odds of the threshold.
        NearThreshold = "near_threshold",
        /// The model's own feature distance says it has not seen the like of this plate.
        Unfamiliar = "unfamiliar",
    }
}

stored_enum! {
    /// The stage a plate failed in.
    pub enum Stage {
        Read = "read",
        Decode = "decode",
        Infer = "infer",
        Explain = "explain",
    }
}

stored_enum! {
    /// Why a plate could not be judged.
    pub enum FailureKind {
        /// The file could not be read.
        Io = "io",
        /// Larger than `decode.max_file_bytes`; never read.
        TooLarge = "too_large",
        NotDicom = "not_dicom",
        Malformed = "malformed",
        /// Refused by the decode policy (modality, dimensions, not an image).
        Policy = "policy",
        Unsupported = "unsupported",
        /// The pixel data could not be decoded.
        Pixels = "pixels",
        /// The model failed on the plate's batch.
        Model = "model",
        /// An overlay could not be written.
        Write = "write",
        /// A stage's worker panicked on this plate.
        Panic = "panic",
        /// The file stopped plateqc `watch.max_attempts` times while judged alone, or killed
        /// its decode worker; quarantined unjudged.
        Crash = "crash",
        /// A symbolic link found in an inbox or a scanned folder: not followed, not read.
        Symlink = "symlink",
    }
}

/// A record not judged yet is not usable.
impl Default for Verdict {
    fn default() -> Self {
        Verdict::Error
    }
}

impl Verdict {
    /// A verdict a model or a reviewer gives (not [`Verdict::Error`]).
    pub fn is_judgement(self) -> bool {
        self != Verdict::Error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored strings are the database's contract (migrations, views, reports): pinned.
    #[test]
    fn stored_strings_are_pinned_and_read_back() {
        let all = |v: Vec<&str>| v.join(",");
        assert_eq!(
            all(Verdict::ALL.iter().map(|v| v.as_str()).collect()),
            "usable,unusable,error"
        );
        assert_eq!(
            all(Stage::ALL.iter().map(|v| v.as_str()).collect()),
            "read,decode,infer,explain"
        );
        assert_eq!(
            all(FailureKind::ALL.iter().map(|v| v.as_str()).collect()),
            "io,too_large,not_dicom,malformed,policy,unsupported,pixels,model,write,panic,crash,symlink"
        );
        for v in FailureKind::ALL {
            assert_eq!(v.as_str().parse::<FailureKind>(), Ok(*v));
        }
        assert!("maybe".parse::<Verdict>().is_err());
        assert_eq!(
            serde_json::to_string(&Verdict::Unusable).unwrap(),
            "\"unusable\""
        );
    }
}
