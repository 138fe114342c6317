//! Newline-delimited JSON framing under jsonrpsee's client: one message per line on any byte stream.
//!
//! The daemon detects the framing from the first byte a client sends (`{`
//! means lines), so the client never announces it. Incoming lines are cut by
//! the protocol crate's [`FrameDecoder`], which bounds every message by
//! [`corral_protocol::MAX_MESSAGE_BYTES`]: a daemon that sends an endless line
//! cannot make the client buffer without limit.

use corral_protocol::framing::{self, FrameDecoder, FrameError, Framing};
use jsonrpsee::core::client::{ReceivedMessage, TransportReceiverT, TransportSenderT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of one read from the socket; frames larger than this span several reads.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why the line transport stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// Reading or writing the stream failed.
    #[error("socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon sent something that cannot be cut into messages.
    #[error("bad message framing from corrald: {0}")]
    Frame(#[from] FrameError),
    /// The daemon closed the connection.
    #[error("corrald closed the connection")]
    Closed,
}

/// Writes each outgoing message as one line.
#[derive(Debug)]
pub(crate) struct LineSender<W> {
    writer: W,
    frame: Vec<u8>,
}

impl<W> LineSender<W> {
    pub(crate) fn new(writer: W) -> Self {
        Self {
            writer,
            frame: Vec::new(),
        }
    }
}

impl<W> TransportSenderT for LineSender<W>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = TransportError;

    async fn send(&mut self, msg: String) -> Result<(), TransportError> {
        // jsonrpsee serializes compactly, and JSON escapes newlines inside
        // strings, so a message never contains the line terminator.
        self.frame.clear();
        framing::encode(Framing::Lines, msg.as_bytes(), &mut self.frame);
        self.writer.write_all(&self.frame).await?;
        self.writer.flush().await?;
        Ok(())
    }

    async fn close(&mut self) -> Result<(), TransportError> {
        self.writer.shutdown().await?;
        Ok(())
    }
}

/// Reads incoming lines and hands each one to jsonrpsee as a message.
#[derive(Debug)]
pub(crate) struct LineReceiver<R> {
    reader: R,
    decoder: FrameDecoder,
    chunk: Box<[u8]>,
}

impl<R> LineReceiver<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self::with_limit(reader, corral_protocol::MAX_MESSAGE_BYTES)
    }

    pub(crate) fn with_limit(reader: R, max_message_bytes: usize) -> Self {
        Self {
            reader,
            decoder: FrameDecoder::new(Framing::Lines, max_message_bytes),
            chunk: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        }
    }
}

impl<R> TransportReceiverT for LineReceiver<R>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    type Error = TransportError;

    async fn receive(&mut self) -> Result<ReceivedMessage, TransportError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                // jsonrpsee parses bytes directly; no UTF-8 copy needed.
                return Ok(ReceivedMessage::Bytes(frame));
            }
            let read = self.reader.read(&mut self.chunk).await?;
            if read == 0 {
                return Err(TransportError::Closed);
            }
            self.decoder.feed(&self.chunk[..read]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(message: ReceivedMessage) -> Vec<u8> {
        match message {
            ReceivedMessage::Bytes(bytes) => bytes,
            ReceivedMessage::Text(text) => text.into_bytes(),
            ReceivedMessage::Pong => panic!("line transport never yields pongs"),
        }
    }

    #[tokio::test]
    async fn sender_writes_one_line_per_message() {
        let (client_side, mut daemon_side) = tokio::io::duplex(1024);
        let mut sender = LineSender::new(client_side);
        sender.send(r#"{"a":1}"#.to_owned()).await.expect("send");
        sender.send(r#"{"b":"x\ny"}"#.to_owned()).await.expect("send");
        sender.close().await.expect("close");
        let mut written = String::new();
        daemon_side.read_to_string(&mut written).await.expect("read");
        assert_eq!(written, "{\"a\":1}\n{\"b\":\"x\\ny\"}\n");
    }

    #[tokio::test]
    async fn receiver_joins_split_reads_and_skips_blank_lines() {
        let (mut daemon_side, client_side) = tokio::io::duplex(1024);
        let mut receiver = LineReceiver::new(client_side);
        daemon_side.write_all(b"{\"a\":").await.expect("write");
        daemon_side
            .write_all(b"1}\r\n\n{\"b\":2}\n{\"c\"")
            .await
            .expect("write");
        drop(daemon_side);
        assert_eq!(bytes(receiver.receive().await.expect("first")), b"{\"a\":1}");
        assert_eq!(bytes(receiver.receive().await.expect("second")), b"{\"b\":2}");
        // The unterminated tail is not a message: the stream just ends.
        assert!(matches!(receiver.receive().await, Err(TransportError::Closed)));
    }

    #[tokio::test]
    async fn receiver_refuses_oversized_lines() {
        let (mut daemon_side, client_side) = tokio::io::duplex(1024);
        let mut receiver = LineReceiver::with_limit(client_side, 8);
        daemon_side
            .write_all(b"{\"much too long\":true}\n")
            .await
            .expect("write");
        assert!(matches!(
            receiver.receive().await,
            Err(TransportError::Frame(FrameError::TooLarge { limit: 8, .. }))
        ));
    }
}
