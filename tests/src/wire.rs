//! Talking to a server below the generated clients: a gRPC call whose body is
//! any bytes (invalid protobuf, wrong wire types, invalid UTF-8), protobuf
//! encoding by hand, HTTP/2 requests that are not gRPC, and raw TCP garbage.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
    Status,
};

/// A codec that sends and receives message bodies as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

/// Encoder/decoder of [`RawCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawBytes;

impl Encoder for RawBytes {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// Calls unary method `path` (`/package.Service/Method`) with `body` as the
/// message; the answer's bytes or its status.
pub async fn raw_unary(channel: &Channel, path: &'static str, body: Vec<u8>) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let mut request = tonic::Request::new(Bytes::from(body));
    request.set_timeout(Duration::from_secs(5));
    grpc.unary(request, PathAndQuery::from_static(path), RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// Calls server-streaming method `path` with `body`; the status the stream
/// ends with (OK when it ends cleanly, or when it is still open and quiet
/// after `max_items` messages or half a second: an accepted watch).
pub async fn raw_streaming(channel: &Channel, path: &'static str, body: Vec<u8>, max_items: usize) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if let Err(e) = grpc.ready().await {
        return Status::unavailable(format!("not ready: {e}"));
    }
    let mut request = tonic::Request::new(Bytes::from(body));
    request.set_timeout(Duration::from_secs(5));
    match grpc
        .server_streaming(request, PathAndQuery::from_static(path), RawCodec)
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            for _ in 0..max_items {
                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                    Err(_) => return Status::ok("still open"),
                    Ok(Ok(Some(_))) => {}
                    Ok(Ok(None)) => return Status::ok(""),
                    Ok(Err(status)) => return status,
                }
            }
            Status::ok("")
        }
    }
}

/// Protobuf by hand, so a field can carry a value of the wrong wire type.
pub mod pb {
    /// Appends a base-128 varint.
    pub fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    /// Field `field` as a varint (wire type 0).
    pub fn int(field: u32, value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, u64::from(field) << 3);
        varint(&mut out, value as u64);
        out
    }

    /// Field `field` as length-delimited bytes (wire type 2).
    pub fn bytes(field: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, (u64::from(field) << 3) | 2);
        varint(&mut out, value.len() as u64);
        out.extend_from_slice(value);
        out
    }

    /// Field `field` as a fixed 64-bit value (wire type 1).
    pub fn fixed64(field: u32, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, (u64::from(field) << 3) | 1);
        out.extend_from_slice(&value.to_le_bytes());
        out
    }
}

/// What a raw TCP poke saw.
#[derive(Debug)]
pub struct Poke {
    /// Bytes the server sent back before closing or going quiet.
    pub reply: Vec<u8>,
}

/// Connects to `addr`, writes `junk`, reads whatever comes back for up to
/// `linger`, and closes.
pub async fn poke(addr: &str, junk: &[u8], linger: Duration) -> std::io::Result<Poke> {
    let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    // The server may close mid-write: that is a fine answer to junk.
    let _ = stream.write_all(junk).await;
    let _ = stream.flush().await;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + linger;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.len() > 64 * 1024 {
                    break;
                }
            }
        }
    }
    Ok(Poke { reply })
}

/// The HTTP/2 client connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame: 9-byte header plus payload.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Sends one HTTP/2 request (prior knowledge, no TLS) with `headers` and
/// `body` and returns the response status and its `grpc-status`, if any.
pub async fn h2_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(u16, Option<String>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (client, connection) = h2::client::handshake(tcp).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).map_err(|e| e.to_string())?;
        let (response, mut send) = client
            .send_request(request, body.is_none())
            .map_err(|e| e.to_string())?;
        if let Some(body) = body {
            send.send_data(Bytes::from(body), true).map_err(|e| e.to_string())?;
        }
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .map_err(|_| "no response within 5 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let mut grpc_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = response.into_body();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), body.data())
            .await
            .map_err(|_| "body did not end within 5 s".to_owned())?
        {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        if grpc_status.is_none() {
            if let Ok(Some(trailers)) = body.trailers().await {
                grpc_status = trailers
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
            }
        }
        Ok((status, grpc_status))
    }
    .await;
    driver.abort();
    result
}
