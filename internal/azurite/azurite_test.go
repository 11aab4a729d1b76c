package azurite

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// get sends an unauthenticated request; Azurite answers it (with an auth
// error), which is all these tests need to see it serving.
func get(t *testing.T, client *http.Client, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func sharedKeyClient(t *testing.T, endpoint, name string, tr policy.Transporter) *container.Client {
	t.Helper()
	cred, err := container.NewSharedKeyCredential(Account, Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := container.NewClientWithSharedKeyCredential(endpoint+"/"+name, cred, &container.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStartAnswersAndCreatesContainers(t *testing.T) {
	s := StartT(t, Options{})
	if !strings.HasPrefix(s.BlobEndpoint(), "http://127.0.0.1:") || !strings.HasSuffix(s.BlobEndpoint(), "/"+Account) {
		t.Fatalf("BlobEndpoint = %q", s.BlobEndpoint())
	}
	client := &http.Client{Transport: s.Transport()}
	resp := get(t, client, s.BlobEndpoint()+"?comp=list")
	if got := resp.Header.Get("Server"); !strings.Contains(got, "Azurite-Blob/"+Version) {
		t.Fatalf("Server header = %q, want Azurite-Blob/%s", got, Version)
	}
	if err := s.CreateContainer(ctxT(t), "first"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateContainer(ctxT(t), "first"); err != nil {
		t.Fatalf("creating an existing container: %v", err)
	}
	if _, err := sharedKeyClient(t, s.BlobEndpoint(), "first", client).GetProperties(ctxT(t), nil); err != nil {
		t.Fatalf("container properties: %v", err)
	}
}

func TestTwoServersCloseKills(t *testing.T) {
	a := StartT(t, Options{})
	b := StartT(t, Options{})
	if a.Port() == b.Port() {
		t.Fatalf("two servers share port %d", a.Port())
	}
	if err := a.CreateContainer(ctxT(t), "only-in-a"); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: b.Transport()}
	_, err := sharedKeyClient(t, b.BlobEndpoint(), "only-in-a", client).GetProperties(ctxT(t), nil)
	if err == nil {
		t.Fatal("container created in one server is visible in the other")
	}

	pid := a.PID()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Exited():
	default:
		t.Fatal("Close returned before the process exited")
	}
	// The process group is gone: signal 0 probes without killing.
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process group %d still exists after Close (kill -0: %v)", pid, err)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port())), time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("port %d still accepts connections after Close", a.Port())
	}
	if _, err := os.Stat(a.LogPath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp dir not removed: stat %s: %v", a.LogPath(), err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// b is unaffected.
	get(t, client, b.BlobEndpoint()+"?comp=list")
}

func TestHTTPS(t *testing.T) {
	s := StartT(t, Options{HTTPS: true, OAuth: true})
	if !strings.HasPrefix(s.BlobEndpoint(), "https://127.0.0.1:") {
		t.Fatalf("BlobEndpoint = %q", s.BlobEndpoint())
	}
	if s.CACertPool() == nil || len(s.CACertPEM()) == 0 {
		t.Fatal("no CA for an HTTPS server")
	}
	get(t, &http.Client{Transport: s.Transport()}, s.BlobEndpoint()+"?comp=list")

	// Without the CA the handshake fails.
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, s.BlobEndpoint()+"?comp=list", nil)
	plain := &http.Client{Transport: &http.Transport{Proxy: nil}}
	if resp, err := plain.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("TLS handshake succeeded without trusting the generated CA")
	}

	if err := s.CreateContainer(ctxT(t), "tls"); err != nil {
		t.Fatal(err)
	}
	// OAuth: a minted token is accepted, an expired one is not.
	tr := &http.Client{Transport: s.Transport()}
	c, err := container.NewClient(s.BlobEndpoint()+"/tls", TokenCredential(), &container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetProperties(ctxT(t), nil); err != nil {
		t.Fatalf("container properties with a bearer token: %v", err)
	}
	expired := staticCred(Token("", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)))
	c, err = container.NewClient(s.BlobEndpoint()+"/tls", expired, &container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	var re *azcore.ResponseError
	if _, err := c.GetProperties(ctxT(t), nil); !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized && re.StatusCode != http.StatusForbidden {
		t.Fatalf("expired token: err = %v, want 401/403", err)
	}
}

type staticCred string

func (c staticCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(c), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestOAuthNeedsHTTPS(t *testing.T) {
	if _, err := Start(ctxT(t), Options{OAuth: true}); err == nil {
		t.Fatal("Start with OAuth over http succeeded")
	}
}

func TestFaultProxy(t *testing.T) {
	s := StartT(t, Options{})
	if err := s.CreateContainer(ctxT(t), "proxied"); err != nil {
		t.Fatal(err)
	}
	p := NewFaultProxyT(t, s)
	client := &http.Client{Transport: s.Transport()}
	c := sharedKeyClient(t, p.BlobEndpoint(), "proxied", client)

	if _, err := c.GetProperties(ctxT(t), nil); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	// Two 503s are absorbed by the SDK's two retries.
	p.FailNext(2)
	before := p.Requests()
	if _, err := c.GetProperties(ctxT(t), nil); err != nil {
		t.Fatalf("after 2 injected 503s with 2 retries: %v", err)
	}
	if got := p.Requests() - before; got != 3 {
		t.Fatalf("%d requests for 2 injected 503s, want 3", got)
	}
	// Three are not, and the SDK sees Azure's error code.
	p.FailNext(3)
	_, err := c.GetProperties(ctxT(t), nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusServiceUnavailable || re.ErrorCode != "ServerBusy" {
		t.Fatalf("after 3 injected 503s: err = %v, want 503 ServerBusy", err)
	}

	// A corrupted body differs from the stored one.
	bc := c.NewBlockBlobClient("x")
	data := []byte("0123456789abcdef")
	if _, err := bc.UploadBuffer(ctxT(t), data, nil); err != nil {
		t.Fatal(err)
	}
	p.CorruptNext(1)
	for i, want := range []bool{true, false} {
		resp, err := bc.DownloadStream(ctxT(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if corrupted := string(got) != string(data); corrupted != want || len(got) != len(data) {
			t.Fatalf("download %d = %q, corrupted %v, want %v", i, got, corrupted, want)
		}
	}
}

func TestSweepStale(t *testing.T) {
	mk := func(pid int) string {
		d, err := os.MkdirTemp("", tempPattern)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.WriteFile(filepath.Join(d, "azurite.pid"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	dead, alive := mk(exited.Process.Pid), mk(os.Getpid())
	sweepStale()
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir of an exited server survived: %v", err)
	}
	if _, err := os.Stat(alive); err != nil {
		t.Errorf("temp dir of a live server removed: %v", err)
	}
}
