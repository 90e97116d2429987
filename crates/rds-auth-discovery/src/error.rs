use std::error::Error as StdError;

use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use rds_auth_startup::StartupError;

/// Discovery or its configuration failed. Messages name the API call or the rule and say why;
/// they never include credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// A tag rule could not be parsed.
    #[error("invalid tag rule {rule:?}: {reason}")]
    TagRule { rule: String, reason: String },
    /// The account's credentials could not be loaded (missing profile, failed AssumeRole, ...).
    #[error("no AWS credentials for account {account}: {reason}")]
    Credentials { account: String, reason: String },
    /// AWS answered an API call with an error, for example `AccessDenied`.
    #[error("{code} on rds:{operation}: {message}")]
    Api { operation: &'static str, code: String, message: String },
    /// An API call got no answer: connection refused, timeout, unreadable response.
    #[error("rds:{operation} failed: {reason}")]
    Request { operation: &'static str, reason: String },
    /// A discovered endpoint is not a valid target spelling.
    #[error("{name} has no usable endpoint: {source}")]
    Endpoint {
        name: String,
        #[source]
        source: StartupError,
    },
}

impl DiscoveryError {
    /// Maps an aws-sdk-rds failure of `operation` (the API name, `DescribeDBInstances`).
    pub(crate) fn from_sdk<E>(operation: &'static str, error: SdkError<E>) -> DiscoveryError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        match &error {
            SdkError::ServiceError(context) => {
                let status = context.raw().status().as_u16();
                let service_error = context.err();
                let code = match service_error.code() {
                    Some(code) => code.to_owned(),
                    None => format!("HTTP {status}"),
                };
                let message = service_error.message().unwrap_or("no error message").to_owned();
                DiscoveryError::Api { operation, code, message }
            }
            _ => DiscoveryError::Request { operation, reason: error_chain(&error) },
        }
    }
}

/// An error and its sources, joined with `: `. Unlike aws-smithy's `DisplayErrorContext`, it
/// leaves out the `Debug` form, which can hold a whole HTTP response.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        // Some wrappers repeat their source's message; say it once.
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn error_chain_joins_sources() {
        assert_eq!(error_chain(&Outer(Inner)), "outer: inner");
    }

    #[test]
    fn api_errors_name_the_call() {
        let error = DiscoveryError::Api {
            operation: "DescribeDBInstances",
            code: "AccessDenied".to_owned(),
            message: "not authorized".to_owned(),
        };
        assert_eq!(error.to_string(), "AccessDenied on rds:DescribeDBInstances: not authorized");
    }

    #[test]
    fn sdk_errors_are_mapped() {
        use aws_sdk_rds::config::http::HttpResponse;
        use aws_sdk_rds::error::ErrorMetadata;
        use aws_sdk_rds::operation::describe_db_instances::DescribeDBInstancesError;

        let metadata = ErrorMetadata::builder()
            .code("AccessDenied")
            .message("User: arn:aws:iam::123456789012:user/dev is not authorized to perform: rds:DescribeDBInstances")
            .build();
        let raw = HttpResponse::new(403u16.try_into().unwrap(), "".into());
        let error = SdkError::service_error(DescribeDBInstancesError::generic(metadata), raw);
        assert_eq!(
            DiscoveryError::from_sdk("DescribeDBInstances", error).to_string(),
            "AccessDenied on rds:DescribeDBInstances: User: arn:aws:iam::123456789012:user/dev is not \
             authorized to perform: rds:DescribeDBInstances"
        );

        let raw = HttpResponse::new(500u16.try_into().unwrap(), "<html>".into());
        let error =
            SdkError::service_error(DescribeDBInstancesError::generic(ErrorMetadata::builder().build()), raw);
        assert_eq!(
            DiscoveryError::from_sdk("DescribeDBInstances", error).to_string(),
            "HTTP 500 on rds:DescribeDBInstances: no error message"
        );

        let error: SdkError<DescribeDBInstancesError> = SdkError::timeout_error("attempt timed out");
        let mapped = DiscoveryError::from_sdk("DescribeDBClusters", error);
        assert!(
            matches!(mapped, DiscoveryError::Request { operation: "DescribeDBClusters", .. }),
            "{mapped:?}"
        );
        assert!(mapped.to_string().starts_with("rds:DescribeDBClusters failed: "), "{mapped}");
        assert!(mapped.to_string().contains("attempt timed out"), "{mapped}");
    }
}
