//! The bearer-token check in front of PostCommand (writes) and EventStore
//! (reads): refused calls never reach a handler, so they append nothing.

use std::sync::Arc;

use postmesh_common::auth::{Access, Authenticator};
use tonic::{service::Interceptor, Request, Status};

use crate::error::Error;

/// Checks each call's token for `access`; a no-op when tokens are not configured.
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    auth: Option<Arc<Authenticator>>,
    access: Access,
}

impl AuthInterceptor {
    /// An interceptor for calls of kind `access`.
    pub fn new(auth: Option<Arc<Authenticator>>, access: Access) -> Self {
        Self { auth, access }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(auth) = &self.auth else {
            return Ok(request);
        };
        match auth.check(request.metadata(), self.access) {
            Ok(Some(principal)) => {
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Ok(None) => Ok(request),
            Err(error) => {
                let error = Error::from(error);
                tracing::info!(access = ?self.access, code = ?error.code(), reason = %error, "call refused");
                Err(error.into())
            }
        }
    }
}
