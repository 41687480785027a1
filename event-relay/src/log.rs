//! The relay's reads of the event log (command-svc's `EventStore`): the
//! client, with TLS and the bearer token as configured, `GetHead`, and
//! `ReadAll` from a position. Rebuild and catch-up both read through here.

use std::time::Duration;

use futures::{Stream, StreamExt};
use postmesh_common::auth::TokenFile;
use postmesh_proto::v1::{event_store_client::EventStoreClient, GetHeadRequest, PostEvent, ReadAllRequest};

use crate::config::Config;

/// Longest a `GetHead` may take.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of command-svc's event store.
#[derive(Clone)]
pub struct EventLog {
    client: EventStoreClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenFile>>,
}

impl EventLog {
    /// A client of `config.command_endpoint` (COMMAND_TLS_*, COMMAND_TOKEN_FILE
    /// as configured). Connects lazily: an event store that is down fails
    /// the calls, not this.
    pub fn connect(config: &Config) -> anyhow::Result<Self> {
        postmesh_common::tls::install_default_provider();
        let channel = config
            .command_client
            .tls()
            .endpoint(&config.command_endpoint)?
            .connect_lazy();
        let token = TokenFile(config.command_client.command_token_file.clone());
        let client = EventStoreClient::with_interceptor(channel, token).max_decoding_message_size(16 * 1024 * 1024);
        Ok(Self { client })
    }

    /// The position through which the log is complete (contract C1): every
    /// event at or below it is committed and readable.
    pub async fn head(&self) -> anyhow::Result<i64> {
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(HEAD_TIMEOUT, client.get_head(GetHeadRequest {}))
            .await
            .map_err(|_| anyhow::anyhow!("GetHead did not answer within {HEAD_TIMEOUT:?}"))??;
        Ok(answer.into_inner().complete_through)
    }

    /// The events after `from` in position order, at most `max_count` (0:
    /// no limit).
    pub async fn read_all(
        &self,
        from: i64,
        max_count: i64,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<PostEvent>> + Send + 'static> {
        let mut client = self.client.clone();
        let stream = client
            .read_all(ReadAllRequest {
                from_position: from,
                max_count,
            })
            .await?
            .into_inner();
        Ok(stream.filter_map(|item| async move {
            match item {
                Ok(response) => response.event.map(Ok),
                Err(status) => Some(Err(anyhow::Error::from(status))),
            }
        }))
    }
}
