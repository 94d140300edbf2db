//! The SMTP mailer of managed-scan monitors against a minimal SMTP server on 127.0.0.1
//! (plain SMTP, no TLS): the message arrives with the sender, recipient and subject.

use portscope_control_api::managed::mail::{Mailer, SmtpMailer};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Accepts one session and records the commands and the DATA text.
async fn smtp_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let (r, mut w) = sock.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"220 test ESMTP\r\n").await.unwrap();
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().unwrap().push(line.clone());
            let reply: &[u8] = if in_data {
                if line == "." {
                    in_data = false;
                    b"250 queued\r\n"
                } else {
                    continue;
                }
            } else if line.starts_with("EHLO") || line.starts_with("HELO") {
                b"250 test\r\n"
            } else if line == "DATA" {
                in_data = true;
                b"354 go on\r\n"
            } else if line == "QUIT" {
                w.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 ok\r\n"
            };
            w.write_all(reply).await.unwrap();
        }
    });
    (port, seen)
}

#[tokio::test]
async fn smtp_mailer_delivers_to_a_loopback_server() {
    let (port, seen) = smtp_server().await;
    let m = SmtpMailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "Portscope <alerts@example.com>",
    )
    .unwrap();
    m.send(
        "ops@example.com",
        "[portscope] 1 alert(s)",
        "- [HIGH] port 3306/tcp is newly open",
    )
    .await
    .unwrap();
    let seen = seen.lock().unwrap().join("\n");
    assert!(seen.contains("MAIL FROM:<alerts@example.com>"), "{seen}");
    assert!(seen.contains("RCPT TO:<ops@example.com>"), "{seen}");
    assert!(seen.contains("Subject: [portscope] 1 alert(s)"), "{seen}");
    assert!(
        seen.contains("- [HIGH] port 3306/tcp is newly open"),
        "{seen}"
    );
}
