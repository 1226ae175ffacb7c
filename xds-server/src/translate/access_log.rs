//! Access loggers: Envoy's stdout or file logger, writing JSON lines or Envoy's text format.

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog as EnvoyAccessLog, access_log::ConfigType,
};
use envoy_types::pb::google::protobuf::{Any, Value, value::Kind};
use prost::Message;

use crate::catalog::{AccessLog, ListenerProtocol, LogFormat};

const STDOUT: &str = "envoy.access_loggers.stdout";
const FILE: &str = "envoy.access_loggers.file";
const STDOUT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const FILE_TYPE: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";

/// The first field of every JSON line.
const START: &[(&str, &str)] = &[("start_time", "%START_TIME%")];

/// The fields of an HTTP request's JSON line that only requests have, before the connection's.
const HTTP_REQUEST: &[(&str, &str)] = &[
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("status", "%RESPONSE_CODE%"),
];

/// What HTTP requests and TCP connections both log; `duration` in milliseconds.
const CONNECTION: &[(&str, &str)] = &[
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    ("upstream", "%UPSTREAM_CLUSTER%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("downstream", "%DOWNSTREAM_REMOTE_ADDRESS%"),
];

/// The last fields of an HTTP request's JSON line.
const HTTP_HEADERS: &[(&str, &str)] = &[
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
];

/// The fields of a JSON line, in this order: an HTTP request's, or a TCP connection's.
fn fields(
    protocol: ListenerProtocol,
) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let http: &[&[(&str, &str)]] = match protocol {
        ListenerProtocol::Http => &[START, HTTP_REQUEST, CONNECTION, HTTP_HEADERS],
        ListenerProtocol::Tcp => &[START, CONNECTION],
    };
    http.iter().flat_map(|part| part.iter())
}

/// The access loggers of a listener (none, or one).
pub(super) fn loggers(log: Option<&AccessLog>, protocol: ListenerProtocol) -> Vec<EnvoyAccessLog> {
    let Some(log) = log else {
        return Vec::new();
    };
    let format = (log.format == LogFormat::Json).then(|| JsonFormat {
        json_format: Some(OrderedStruct {
            fields: fields(protocol)
                .map(|(key, command)| StructField {
                    key: key.to_string(),
                    value: Some(Value {
                        kind: Some(Kind::StringValue(command.to_string())),
                    }),
                })
                .collect(),
        }),
    });
    let (name, config) = match &log.path {
        None => (
            STDOUT,
            Any {
                type_url: STDOUT_TYPE.into(),
                value: StdoutLog { log_format: format }.encode_to_vec(),
            },
        ),
        Some(path) => (
            FILE,
            Any {
                type_url: FILE_TYPE.into(),
                value: FileLog {
                    path: path.display().to_string(),
                    log_format: format,
                }
                .encode_to_vec(),
            },
        ),
    };
    vec![EnvoyAccessLog {
        name: name.into(),
        config_type: Some(ConfigType::TypedConfig(config)),
        ..Default::default()
    }]
}

// Wire-compatible stand-ins for the Envoy messages that carry a JSON format: prost's
// `google.protobuf.Struct` keeps its fields in a HashMap, which encodes in a different order in
// every process, and resource versions are content hashes. These keep the order above.

/// `google.protobuf.Struct`, fields in order.
#[derive(Clone, PartialEq, Message)]
struct OrderedStruct {
    #[prost(message, repeated, tag = "1")]
    fields: Vec<StructField>,
}

/// One entry of `Struct.fields`.
#[derive(Clone, PartialEq, Message)]
struct StructField {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Value>,
}

/// `envoy.config.core.v3.SubstitutionFormatString` with `json_format` (2).
#[derive(Clone, PartialEq, Message)]
struct JsonFormat {
    #[prost(message, optional, tag = "2")]
    json_format: Option<OrderedStruct>,
}

/// `envoy.extensions.access_loggers.stream.v3.StdoutAccessLog` with `log_format` (1).
#[derive(Clone, PartialEq, Message)]
struct StdoutLog {
    #[prost(message, optional, tag = "1")]
    log_format: Option<JsonFormat>,
}

/// `envoy.extensions.access_loggers.file.v3.FileAccessLog` with `path` (1), `log_format` (5).
#[derive(Clone, PartialEq, Message)]
struct FileLog {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(message, optional, tag = "5")]
    log_format: Option<JsonFormat>,
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
        StdoutAccessLog, stdout_access_log::AccessLogFormat,
    };

    use super::*;

    /// The stand-ins decode as Envoy's own messages, with every field.
    #[test]
    fn the_json_format_decodes_as_envoys_stdout_logger() {
        let log = AccessLog {
            format: LogFormat::Json,
            path: None,
        };
        let [logger] = &loggers(Some(&log), ListenerProtocol::Http)[..] else {
            panic!("one logger");
        };
        let Some(ConfigType::TypedConfig(any)) = &logger.config_type else {
            panic!("typed");
        };
        assert_eq!(any.type_url, STDOUT_TYPE);
        let decoded = StdoutAccessLog::decode(any.value.as_slice()).unwrap();
        let Some(AccessLogFormat::LogFormat(f)) = decoded.access_log_format else {
            panic!("a log format");
        };
        let Some(Format::JsonFormat(s)) = f.format else {
            panic!("json");
        };
        let keys: Vec<&str> = fields(ListenerProtocol::Http).map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "start_time",
                "method",
                "path",
                "protocol",
                "authority",
                "status",
                "response_flags",
                "bytes_received",
                "bytes_sent",
                "duration",
                "upstream",
                "upstream_host",
                "downstream",
                "request_id",
                "user_agent"
            ]
        );
        assert_eq!(s.fields.len(), keys.len());
        assert_eq!(
            s.fields["status"].kind,
            Some(Kind::StringValue("%RESPONSE_CODE%".into()))
        );
    }

    /// Envoy's own `Struct` would encode its fields in a different order on each encoding
    /// (each HashMap has its own random order); the stand-ins encode the same bytes every time,
    /// fields in the order of the list.
    #[test]
    fn the_json_format_encodes_the_same_every_time() {
        let log = AccessLog {
            format: LogFormat::Json,
            path: Some("/var/log/a.log".into()),
        };
        let bytes = || {
            let logger = &loggers(Some(&log), ListenerProtocol::Tcp)[0];
            logger.encode_to_vec()
        };
        let first = bytes();
        assert!((0..20).all(|_| bytes() == first));
        let text = String::from_utf8_lossy(&first);
        let positions: Vec<usize> = fields(ListenerProtocol::Tcp)
            .map(|(key, _)| text.find(key).expect("every field is there"))
            .collect();
        assert!(positions.is_sorted(), "{positions:?}");
    }
}
