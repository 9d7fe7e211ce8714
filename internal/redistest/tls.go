package redistest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TLSFiles are PEM files made for one test: a CA, a server certificate
// for 127.0.0.1 and localhost signed by it, and a client certificate
// signed by it (for servers that require one).
type TLSFiles struct {
	CA                    string // the CA's certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	Pool                  *x509.CertPool // holds the CA
}

// ClientConfig returns a TLS configuration that trusts the CA and, if
// withCert, presents the client certificate.
func (f TLSFiles) ClientConfig(t testing.TB, withCert bool) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: f.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// NewTLSFiles writes a fresh CA and certificates into a temporary
// directory of the test's own.
func NewTLSFiles(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, caCert, caDER := newCert(t, nil, nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "depcache test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	})
	f := TLSFiles{
		CA:         filepath.Join(dir, "ca.crt"),
		ServerCert: filepath.Join(dir, "server.crt"), ServerKey: filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key"),
		Pool: x509.NewCertPool(),
	}
	f.Pool.AddCert(caCert)
	writePEM(t, f.CA, "CERTIFICATE", caDER)
	srvKey, _, srvDER := newCert(t, caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	writePEM(t, f.ServerCert, "CERTIFICATE", srvDER)
	writeKey(t, f.ServerKey, srvKey)
	cliKey, _, cliDER := newCert(t, caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "depcache test client"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	writePEM(t, f.ClientCert, "CERTIFICATE", cliDER)
	writeKey(t, f.ClientKey, cliKey)
	return f
}

// newCert signs tmpl with parentKey (itself when parent is nil).
func newCert(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t testing.TB, path string, key *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "PRIVATE KEY", der)
}

// StartTLS runs redis-server accepting TLS connections only (--port 0,
// --tls-port on a free port) with the server certificate of files, and
// returns its address; args are added (for example "--tls-auth-clients",
// "no"). It skips the test, saying so, when redis-server is not
// installed or was built without TLS.
func StartTLS(t testing.TB, files TLSFiles, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		port := FreePort(t)
		a := append([]string{"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--tls-cert-file", files.ServerCert, "--tls-key-file", files.ServerKey, "--tls-ca-cert-file", files.CA,
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no"}, args...)
		_, err := startOnce(t, bin, "Ready to accept connections", a)
		if err != nil {
			// A build without TLS does not know the tls-* directives.
			if msg := strings.ToLower(err.Error()); strings.Contains(msg, ">>> 'tls-") ||
				strings.Contains(msg, "tls") && strings.Contains(msg, "not supported") {
				t.Skipf("redis-server was built without TLS; check rediss:// by hand (README, Security): %v", err)
			}
			if attempt < 5 {
				t.Logf("redistest: %v; again on another port", err)
				continue
			}
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: files.ClientConfig(t, true)})
		defer c.Close()
		var rerr redis.Error
		if err := c.Ping(context.Background()).Err(); err != nil && !errors.As(err, &rerr) {
			t.Fatalf("redistest: TLS server on %s: %v", addr, err)
		}
		return addr
	}
}
