package azstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/blobfs/blobfs/blob"
	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/blob/blobtest"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/testenv"
)

// srv is the one Azurite of this test binary.
var srv *azurite.Server

// loopback is shared by every client against srv, so connections are
// reused across subtests.
var loopback = func() *http.Client {
	tr := testenv.LoopbackTransport()
	tr.MaxIdleConnsPerHost = 32
	return &http.Client{Transport: tr}
}()

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	s, err := azurite.Start(ctx, azurite.Options{})
	cancel()
	if err != nil {
		// Not a skip: CI must run these tests.
		fmt.Fprintln(os.Stderr, "azstore tests need Azurite:", err)
		os.Exit(1)
	}
	srv = s
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "azurite log tail (%s):\n%s\n", s.LogPath(), s.LogTail(4096))
	}
	s.Close()
	os.Exit(code)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testConfig is a shared-key config for srv's account with retry delays
// short enough for tests; the number of retries stays the default.
func testConfig(endpoint, container string) azstore.Config {
	return azstore.Config{
		ServiceURL:    endpoint,
		Container:     container,
		Credential:    azstore.SharedKey(srv.Account(), srv.Key()),
		Transport:     loopback,
		RetryDelay:    time.Millisecond,
		MaxRetryDelay: 10 * time.Millisecond,
	}
}

func newStore(t testing.TB, cfg azstore.Config) *azstore.Store {
	t.Helper()
	s, err := azstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var containerSeq atomic.Int64

// newContainer creates a fresh container on srv and deletes it when the
// test ends (Azurite keeps everything in memory).
func newContainer(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", os.Getpid(), containerSeq.Add(1))
	admin, err := azstore.NewContainers(testConfig(srv.BlobEndpoint(), name))
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctxT(t), name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := admin.Delete(ctx, name); err != nil {
			t.Errorf("delete container %s: %v", name, err)
		}
	})
	return name
}

// conformanceFixture is a fresh container behind its own FaultProxy (so
// injected faults cannot leak into another subtest's requests) and a store
// on a container that was never created.
func conformanceFixture(t *testing.T, disableChecksums bool) blobtest.Fixture {
	name := newContainer(t)
	proxy := azurite.NewFaultProxyT(t, srv)
	cfg := testConfig(proxy.BlobEndpoint(), name)
	cfg.DisableRangeChecksums = disableChecksums
	missing := testConfig(srv.BlobEndpoint(), "never-created-"+name)
	return blobtest.Fixture{
		Store:          newStore(t, cfg),
		Missing:        newStore(t, missing),
		InjectThrottle: proxy.FailNext,
		MaxRetries:     azstore.DefaultMaxRetries,
	}
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blobtest.Fixture { return conformanceFixture(t, false) })
}

// TestConformanceWithoutRangeChecksums runs the suite on the read path
// that skips range MD5s (one GET per ReadAt).
func TestConformanceWithoutRangeChecksums(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blobtest.Fixture { return conformanceFixture(t, true) })
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestLargeReads covers reads bigger than one checksummed range: they are
// split, fetched concurrently and must still behave as one io.ReaderAt.
func TestLargeReads(t *testing.T) {
	size := testenv.Pick(10<<20+123, 64<<20+123)
	data := randBytes(42, size)
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableRangeChecksums=%v", disable), func(t *testing.T) {
			cfg := testConfig(srv.BlobEndpoint(), newContainer(t))
			cfg.DisableRangeChecksums = disable
			s := newStore(t, cfg)
			a, err := s.Put(ctxT(t), "big", data, blob.WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []struct {
				off, n, want int
				eof          bool
			}{
				{0, size, size, false},
				{0, size + 1, size, true},
				{1, 9 << 20, 9 << 20, false},
				{4<<20 - 7, 4<<20 + 14, 4<<20 + 14, false},
				{size - 5<<20, 8 << 20, 5 << 20, true},
				{size - 1, 9 << 20, 1, true},
				{size, 9 << 20, 0, true},
				{size + 4<<20, 9 << 20, 0, true},
			} {
				p := make([]byte, r.n)
				n, err := s.ReadAt(ctxT(t), "big", a.ETag, p, int64(r.off))
				if n != r.want || r.eof != errors.Is(err, io.EOF) || (err != nil && !errors.Is(err, io.EOF)) {
					t.Fatalf("ReadAt(off %d, len %d) = %d, %v; want %d, eof %v", r.off, r.n, n, err, r.want, r.eof)
				}
				if n > 0 && !bytes.Equal(p[:n], data[r.off:r.off+n]) {
					t.Fatalf("ReadAt(off %d, len %d): wrong bytes", r.off, r.n)
				}
			}
			if _, err := s.Put(ctxT(t), "big", data[:100], blob.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			n, err := s.ReadAt(ctxT(t), "big", a.ETag, make([]byte, 9<<20), 0)
			if n != 0 || !errors.Is(err, blob.ErrStale) {
				t.Fatalf("split read pinned to a replaced version = %d, %v; want 0, ErrStale", n, err)
			}
		})
	}
}

func TestChecksumMismatchOnRead(t *testing.T) {
	name := newContainer(t)
	proxy := azurite.NewFaultProxyT(t, srv)
	s := newStore(t, testConfig(proxy.BlobEndpoint(), name))
	data := randBytes(7, 9<<20+5)
	if _, err := s.Put(ctxT(t), "f", data, blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{1 << 20, len(data)} {
		// Every response damaged: no retry can help.
		proxy.CorruptNext(1000)
		p := make([]byte, size)
		n, err := s.ReadAt(ctxT(t), "f", "", p, 0)
		proxy.CorruptNext(0)
		if n != 0 || !errors.Is(err, blob.ErrChecksum) {
			t.Fatalf("read of %d bytes through a corrupting proxy = %d, %v; want 0, ErrChecksum", size, n, err)
		}
		// One damaged response: the retry gets good bytes.
		proxy.CorruptNext(1)
		n, err = s.ReadAt(ctxT(t), "f", "", p, 0)
		proxy.CorruptNext(0)
		if err != nil || n != size || !bytes.Equal(p, data[:size]) {
			t.Fatalf("read of %d bytes with one corrupted response = %d, %v (bytes equal: %v)", size, n, err, bytes.Equal(p[:n], data[:n]))
		}
	}
}

// TestChecksumMismatchOnUpload shows that Put and StageBlock send a
// checksum the service verifies: a body damaged on the way is refused.
func TestChecksumMismatchOnUpload(t *testing.T) {
	name := newContainer(t)
	proxy := azurite.NewFaultProxyT(t, srv)
	s := newStore(t, testConfig(proxy.BlobEndpoint(), name))
	data := randBytes(8, 1<<20)

	proxy.CorruptNextUpload(1)
	_, err := s.Put(ctxT(t), "put", data, blob.WriteOptions{})
	if !errors.Is(err, blob.ErrChecksum) {
		t.Fatalf("Put with a damaged body: err = %v, want ErrChecksum", err)
	}
	if _, err := s.Stat(ctxT(t), "put"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a refused Put left a blob: %v", err)
	}

	var session [16]byte
	id := blob.BlockID(session, 0)
	proxy.CorruptNextUpload(1)
	if err := s.StageBlock(ctxT(t), "staged", id, data); !errors.Is(err, blob.ErrChecksum) {
		t.Fatalf("StageBlock with a damaged body: err = %v, want ErrChecksum", err)
	}
	if _, err := s.CommitBlocks(ctxT(t), "staged", []string{id}, blob.WriteOptions{}); !errors.Is(err, blob.ErrInvalid) {
		t.Fatalf("commit of a refused block: err = %v, want ErrInvalid", err)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestUnreachable(t *testing.T) {
	cfg := testConfig(fmt.Sprintf("http://127.0.0.1:%d/%s", closedPort(t), azurite.Account), "nowhere")
	cfg.MaxRetries = 1
	s := newStore(t, cfg)
	_, err := s.Stat(ctxT(t), "x")
	if !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("Stat on a closed port: err = %v, want ErrUnavailable", err)
	}
	if _, err := s.ReadAt(ctxT(t), "x", "", make([]byte, 10), 0); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("ReadAt on a closed port: err = %v, want ErrUnavailable", err)
	}
	if _, err := s.Put(ctxT(t), "x", []byte("x"), blob.WriteOptions{}); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("Put on a closed port: err = %v, want ErrUnavailable", err)
	}
	// The loopback guard's refusal is a transport failure too.
	cfg = testConfig("http://192.0.2.1/"+azurite.Account, "nowhere")
	cfg.MaxRetries = -1
	if _, err := newStore(t, cfg).Stat(ctxT(t), "x"); !errors.Is(err, blob.ErrUnavailable) || !errors.Is(err, testenv.ErrNotLoopback) {
		t.Fatalf("Stat on a non-loopback address: err = %v, want ErrUnavailable wrapping ErrNotLoopback", err)
	}
}

func TestWrongKey(t *testing.T) {
	cfg := testConfig(srv.BlobEndpoint(), newContainer(t))
	cfg.Credential = azstore.SharedKey(srv.Account(), "AAAA"+srv.Key()[4:])
	s := newStore(t, cfg)
	if _, err := s.Stat(ctxT(t), "x"); !errors.Is(err, blob.ErrPermission) {
		t.Fatalf("Stat with a wrong key: err = %v, want ErrPermission", err)
	}
	if _, err := s.ReadAt(ctxT(t), "x", "", make([]byte, 1), 0); !errors.Is(err, blob.ErrPermission) {
		t.Fatalf("ReadAt with a wrong key: err = %v, want ErrPermission", err)
	}
	cfg.Credential = azstore.Anonymous()
	if _, err := newStore(t, cfg).List(ctxT(t), blob.ListOptions{}); !errors.Is(err, blob.ErrPermission) {
		t.Fatalf("anonymous List of a private container: err = %v, want ErrPermission", err)
	}
}

func TestSAS(t *testing.T) {
	name := newContainer(t)
	key, err := container.NewSharedKeyCredential(srv.Account(), srv.Key())
	if err != nil {
		t.Fatal(err)
	}
	admin, err := container.NewClientWithSharedKeyCredential(srv.BlobEndpoint()+"/"+name, key,
		&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: loopback}})
	if err != nil {
		t.Fatal(err)
	}
	sasURL, err := admin.GetSASURL(sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true},
		time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, query, _ := strings.Cut(sasURL, "?")
	cfg := testConfig(srv.BlobEndpoint(), name)
	cfg.Credential = azstore.SAS(query)
	s := newStore(t, cfg)
	data := randBytes(10, 100000)
	a, err := s.Put(ctxT(t), "dir/with sas", data, blob.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, len(data))
	if n, err := s.ReadAt(ctxT(t), "dir/with sas", a.ETag, p, 0); err != nil || !bytes.Equal(p[:n], data) {
		t.Fatalf("ReadAt with SAS = %d, %v", n, err)
	}
	if _, err := s.Copy(ctxT(t), "dir/with sas", a.ETag, "copy", blob.WriteOptions{}); err != nil {
		t.Fatalf("Copy with SAS: %v", err)
	}
	page, err := s.List(ctxT(t), blob.ListOptions{})
	if err != nil || len(page.Blobs) != 2 {
		t.Fatalf("List with SAS = %+v, %v", page, err)
	}
	// A SAS for another container does not open this one.
	cfg.Container = "never-created-" + name
	if _, err := newStore(t, cfg).Stat(ctxT(t), "x"); !errors.Is(err, blob.ErrPermission) && !errors.Is(err, blob.ErrContainerNotFound) {
		t.Fatalf("SAS on another container: err = %v", err)
	}
}

type staticToken string

func (c staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(c), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestHTTPS(t *testing.T) {
	tls := azurite.StartT(t, azurite.Options{HTTPS: true, OAuth: true})
	if err := tls.CreateContainer(ctxT(t), "secure"); err != nil {
		t.Fatal(err)
	}
	trusting := &http.Client{Transport: tls.Transport()}
	for _, cred := range []azstore.Credential{
		azstore.SharedKey(tls.Account(), tls.Key()),
		azstore.TokenCredential(azurite.TokenCredential()),
	} {
		t.Run(cred.Kind(), func(t *testing.T) {
			cfg := azstore.Config{ServiceURL: tls.BlobEndpoint(), Container: "secure", Credential: cred, Transport: trusting}
			s := newStore(t, cfg)
			name := "over-tls-" + cred.Kind()
			data := randBytes(9, 5<<20)
			if _, err := s.Put(ctxT(t), name, data, blob.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			p := make([]byte, len(data))
			if n, err := s.ReadAt(ctxT(t), name, "", p, 0); err != nil || n != len(data) || !bytes.Equal(p, data) {
				t.Fatalf("ReadAt over TLS = %d, %v", n, err)
			}
		})
	}
	t.Run("UntrustedCertificate", func(t *testing.T) {
		cfg := azstore.Config{ServiceURL: tls.BlobEndpoint(), Container: "secure", Credential: azstore.SharedKey(tls.Account(), tls.Key()),
			Transport: loopback, MaxRetries: -1}
		if _, err := newStore(t, cfg).Stat(ctxT(t), "x"); !errors.Is(err, blob.ErrUnavailable) {
			t.Fatalf("Stat without trusting the certificate: err = %v, want ErrUnavailable", err)
		}
	})
	t.Run("ExpiredToken", func(t *testing.T) {
		expired := azurite.Token("", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
		cfg := azstore.Config{ServiceURL: tls.BlobEndpoint(), Container: "secure", Credential: azstore.TokenCredential(staticToken(expired)), Transport: trusting}
		if _, err := newStore(t, cfg).Stat(ctxT(t), "x"); !errors.Is(err, blob.ErrPermission) {
			t.Fatalf("Stat with an expired token: err = %v, want ErrPermission", err)
		}
	})
}

func TestContainers(t *testing.T) {
	admin, err := azstore.NewContainers(testConfig(srv.BlobEndpoint(), ""))
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("admin-%d", os.Getpid())
	if ok, err := admin.Exists(ctxT(t), name); ok || err != nil {
		t.Fatalf("Exists before Create = %v, %v", ok, err)
	}
	if err := admin.Create(ctxT(t), name); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctxT(t), name); !errors.Is(err, blob.ErrExists) {
		t.Fatalf("second Create: err = %v, want ErrExists", err)
	}
	if ok, err := admin.Exists(ctxT(t), name); !ok || err != nil {
		t.Fatalf("Exists after Create = %v, %v", ok, err)
	}
	if err := admin.Delete(ctxT(t), name); err != nil {
		t.Fatal(err)
	}
	if err := admin.Delete(ctxT(t), name); !errors.Is(err, blob.ErrContainerNotFound) {
		t.Fatalf("second Delete: err = %v, want ErrContainerNotFound", err)
	}
	if err := admin.Create(ctxT(t), "Bad_Name"); !errors.Is(err, blob.ErrInvalid) {
		t.Fatalf("Create with an invalid name: err = %v, want ErrInvalid", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := azstore.Config{ServiceURL: "https://acct.blob.core.windows.net/", Container: "data", Credential: azstore.Anonymous()}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mutate := range map[string]func(*azstore.Config){
		"no credential": func(c *azstore.Config) { c.Credential = azstore.Credential{} },
		"no URL":        func(c *azstore.Config) { c.ServiceURL = "" },
		"not http":      func(c *azstore.Config) { c.ServiceURL = "ftp://acct/" },
		"query in URL":  func(c *azstore.Config) { c.ServiceURL += "?sv=1&sig=x" },
		"token over http": func(c *azstore.Config) {
			c.ServiceURL = "http://acct/"
			c.Credential = azstore.TokenCredential(staticToken("t"))
		},
		"nil token":         func(c *azstore.Config) { c.Credential = azstore.TokenCredential(nil) },
		"key without name":  func(c *azstore.Config) { c.Credential = azstore.SharedKey("", "a2V5") },
		"empty SAS":         func(c *azstore.Config) { c.Credential = azstore.SAS("?") },
		"upper container":   func(c *azstore.Config) { c.Container = "Data" },
		"short container":   func(c *azstore.Config) { c.Container = "ab" },
		"double hyphen":     func(c *azstore.Config) { c.Container = "a--b" },
		"negative delay":    func(c *azstore.Config) { c.RetryDelay = -time.Second },
		"negative parallel": func(c *azstore.Config) { c.RangeConcurrency = -1 },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); !errors.Is(err, blob.ErrInvalid) {
			t.Errorf("%s: Validate() = %v, want ErrInvalid", name, err)
		}
		if _, err := azstore.New(c); err == nil {
			t.Errorf("%s: New accepted the config", name)
		}
	}
}

func TestCredentialHidesSecrets(t *testing.T) {
	const secret = "c2VjcmV0LWtleS1ub3QtZm9yLWxvZ3M="
	cfg := azstore.Config{ServiceURL: "https://acct.blob.core.windows.net", Container: "c", Credential: azstore.SharedKey("acct", secret)}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "credential", cfg.Credential, "config", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%#v", cfg.Credential), logged.String()} {
		if strings.Contains(s, secret) {
			t.Fatalf("secret printed: %s", s)
		}
	}
	sas := azstore.SAS("sv=2024-01-01&sig=" + secret)
	if s := fmt.Sprintf("%v %+v %#v", sas, sas, sas); strings.Contains(s, secret) {
		t.Fatalf("SAS printed: %s", s)
	}
}

// BenchmarkReadAt8MiB measures one 8 MiB ReadAt on Azurite with and without
// transfer checksums (two concurrent verified 4 MiB GETs vs one 8 MiB GET).
func BenchmarkReadAt8MiB(b *testing.B) {
	const size = 8 << 20
	name := newContainer(b)
	data := randBytes(3, 64<<20)
	put := newStore(b, testConfig(srv.BlobEndpoint(), name))
	if _, err := put.Put(ctxT(b), "bench", data, blob.WriteOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, disable := range []bool{false, true} {
		b.Run(fmt.Sprintf("checksums=%v", !disable), func(b *testing.B) {
			cfg := testConfig(srv.BlobEndpoint(), name)
			cfg.DisableRangeChecksums = disable
			s := newStore(b, cfg)
			p := make([]byte, size)
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				off := int64(i%(len(data)/size)) * size
				if n, err := s.ReadAt(ctxT(b), "bench", "", p, off); err != nil || n != size {
					b.Fatalf("ReadAt = %d, %v", n, err)
				}
			}
		})
	}
}

// TestCopyStaleSourceNoReplace is rename(RENAME_NOREPLACE) of a file that
// changed meanwhile: the stale source must win over the destination check.
func TestCopyStaleSourceNoReplace(t *testing.T) {
	s := newStore(t, testConfig(srv.BlobEndpoint(), newContainer(t)))
	v1, err := s.Put(ctxT(t), "src", []byte("one"), blob.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctxT(t), "src", []byte("two"), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	noReplace := blob.WriteOptions{Conditions: blob.Conditions{IfNoneMatchAny: true}}
	if _, err := s.Copy(ctxT(t), "src", v1.ETag, "dst", noReplace); !errors.Is(err, blob.ErrStale) || errors.Is(err, blob.ErrExists) {
		t.Fatalf("Copy of a stale source to a free name: err = %v, want ErrStale only", err)
	}
	if _, err := s.Put(ctxT(t), "dst", []byte("taken"), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	cur, err := s.Stat(ctxT(t), "src")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Copy(ctxT(t), "src", cur.ETag, "dst", noReplace); !errors.Is(err, blob.ErrExists) {
		t.Fatalf("Copy onto a taken name: err = %v, want ErrExists", err)
	}
}
