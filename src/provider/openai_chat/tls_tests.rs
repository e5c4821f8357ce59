//! The provider clients over TLS: a local TLS endpoint (rcgen's certificate, its own CA given as
//! `ca_file`) in front of the mock upstream, reached by the direct client (rustls) and by reqwest,
//! over HTTP/1.1 and, when the endpoint offers it by ALPN, HTTP/2.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::tests::{call_stream_and_get_a_400, config, request, upstream};
use super::*;
use crate::provider::config::HttpClient;

/// A CA, a certificate it signed for `localhost`, and the CA's PEM written to a file.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn pki(alpn: &[&[u8]]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Pki {
        _dir: dir,
        ca_file,
        server: Arc::new(server),
    }
}

/// Terminates TLS and relays the bytes to `backend` (the mock upstream serves HTTP/1.1 and, by
/// its preface, HTTP/2). Returns its address and the ALPN protocols it negotiated, in order.
async fn tls_front(
    server: Arc<rustls::ServerConfig>,
    backend: SocketAddr,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<Option<Vec<u8>>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let negotiated = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = negotiated.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    seen.lock().unwrap().push(None);
                    return;
                };
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                seen.lock().unwrap().push(Some(alpn.unwrap_or_default()));
                let mut up = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (addr, negotiated)
}

fn https_config(
    front: SocketAddr,
    client: HttpClient,
    ca_file: Option<&std::path::Path>,
) -> ProviderConfig {
    ProviderConfig {
        base_url: format!("https://localhost:{}/v1", front.port()),
        http_client: client,
        ca_file: ca_file.map(Into::into),
        max_retries: 0,
        ..config(front)
    }
}

#[tokio::test]
async fn both_clients_call_and_stream_over_tls_with_http1_and_http2() {
    let backend = upstream().await;
    for (alpn, want) in [
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
        (
            &[b"h2".as_slice(), b"http/1.1".as_slice()][..],
            b"h2".as_slice(),
        ),
    ] {
        let pki = pki(alpn);
        let (front, negotiated) = tls_front(pki.server.clone(), backend).await;
        for client in [HttpClient::Auto, HttpClient::Reqwest] {
            let p = OpenAiChat::new(&https_config(front, client, Some(&pki.ca_file))).unwrap();
            assert_eq!(p.http.is_direct(), client == HttpClient::Auto);
            call_stream_and_get_a_400(&p, "hello over tls").await;
            let seen = std::mem::take(&mut *negotiated.lock().unwrap());
            assert!(
                !seen.is_empty(),
                "{client:?}: no connection reached the TLS front"
            );
            for alpn in seen {
                assert_eq!(alpn.as_deref(), Some(want), "{client:?}");
            }
        }
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_connect_error_for_both_clients() {
    let backend = upstream().await;
    let pki = pki(&[b"http/1.1"]);
    let (front, negotiated) = tls_front(pki.server.clone(), backend).await;
    for client in [HttpClient::Auto, HttpClient::Reqwest] {
        // No ca_file: only the public web PKI is trusted, and it did not sign this certificate.
        let p = OpenAiChat::new(&https_config(front, client, None)).unwrap();
        let err = p.complete(&request("hello")).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Connect(_)),
            "{client:?}: {err:?}"
        );
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{client:?}: {err}"
        );
    }
    assert!(negotiated.lock().unwrap().iter().all(Option::is_none));
}
