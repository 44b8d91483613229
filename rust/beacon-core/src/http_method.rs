//! HTTP methods as the OpenTelemetry semantic conventions label them.

/// The standard methods, plus `Other` for everything else (rendered as `_OTHER`), so that odd
/// or hostile methods cannot create new series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpMethod {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// CONNECT
    Connect,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// PATCH
    Patch,
    /// Any method outside the standard set.
    Other,
}

impl HttpMethod {
    /// Every variant, in label order; `index()` is the position in this array.
    pub const ALL: [HttpMethod; 10] = [
        HttpMethod::Get,
        HttpMethod::Head,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Delete,
        HttpMethod::Connect,
        HttpMethod::Options,
        HttpMethod::Trace,
        HttpMethod::Patch,
        HttpMethod::Other,
    ];

    /// Methods are case-sensitive (RFC 9110): `get` is not `GET` and counts as `_OTHER`.
    pub fn parse(method: &[u8]) -> Self {
        match method {
            b"GET" => HttpMethod::Get,
            b"HEAD" => HttpMethod::Head,
            b"POST" => HttpMethod::Post,
            b"PUT" => HttpMethod::Put,
            b"DELETE" => HttpMethod::Delete,
            b"CONNECT" => HttpMethod::Connect,
            b"OPTIONS" => HttpMethod::Options,
            b"TRACE" => HttpMethod::Trace,
            b"PATCH" => HttpMethod::Patch,
            _ => HttpMethod::Other,
        }
    }

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Connect => "CONNECT",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Trace => "TRACE",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Other => "_OTHER",
        }
    }

    /// Position in [`HttpMethod::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_round_trip() {
        for method in HttpMethod::ALL {
            if method != HttpMethod::Other {
                assert_eq!(HttpMethod::parse(method.as_label().as_bytes()), method);
            }
            assert_eq!(HttpMethod::ALL[method.index()], method);
        }
    }

    #[test]
    fn odd_methods_collapse_to_other() {
        for odd in [&b"get"[..], b"PROPFIND", b"", b"GET ", b"\xff\xfe"] {
            assert_eq!(HttpMethod::parse(odd), HttpMethod::Other);
        }
        assert_eq!(HttpMethod::Other.as_label(), "_OTHER");
    }
}
