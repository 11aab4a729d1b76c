package azstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/blobfs/blobfs/blob"
)

// serviceError builds the error the SDK returns for a response with this
// status and x-ms-error-code.
func serviceError(status int, code string) error {
	req, _ := http.NewRequest(http.MethodGet, "https://acct.blob.core.windows.net/c/b", nil)
	resp := &http.Response{
		StatusCode: status,
		Status:     fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header:     http.Header{},
		Body:       io.NopCloser(strings.NewReader("")),
		Request:    req,
	}
	if code != "" {
		resp.Header.Set("x-ms-error-code", code)
	}
	resp.Header.Set("x-ms-request-id", "req-1")
	return runtime.NewResponseError(resp)
}

func TestTranslate(t *testing.T) {
	ifNone := blob.Conditions{IfNoneMatchAny: true}
	none := blob.Conditions{}
	tests := []struct {
		name string
		err  error
		cond blob.Conditions
		want error // nil: no sentinel
	}{
		{"blob not found", serviceError(404, "BlobNotFound"), none, blob.ErrNotFound},
		{"404 without code (HEAD)", serviceError(404, ""), none, blob.ErrNotFound},
		{"copy source missing", serviceError(404, "CannotVerifyCopySource"), none, blob.ErrNotFound},
		{"container not found", serviceError(404, "ContainerNotFound"), none, blob.ErrContainerNotFound},
		{"container being deleted", serviceError(409, "ContainerBeingDeleted"), none, blob.ErrContainerNotFound},
		{"condition not met", serviceError(412, "ConditionNotMet"), none, blob.ErrStale},
		{"412 without code", serviceError(412, ""), none, blob.ErrStale},
		{"source condition", serviceError(412, "SourceConditionNotMet"), none, blob.ErrStale},
		{"source condition with IfNoneMatch", serviceError(412, "SourceConditionNotMet"), ifNone, blob.ErrStale},
		{"target condition", serviceError(412, "TargetConditionNotMet"), none, blob.ErrStale},
		{"blob exists", serviceError(409, "BlobAlreadyExists"), none, blob.ErrExists},
		{"409 on IfNoneMatch", serviceError(409, ""), ifNone, blob.ErrExists},
		{"412 on IfNoneMatch", serviceError(412, "ConditionNotMet"), ifNone, blob.ErrExists},
		{"container exists", serviceError(409, "ContainerAlreadyExists"), none, blob.ErrExists},
		{"auth failed", serviceError(403, "AuthenticationFailed"), none, blob.ErrPermission},
		{"authz failure", serviceError(403, "AuthorizationFailure"), none, blob.ErrPermission},
		{"permission mismatch", serviceError(403, "AuthorizationPermissionMismatch"), none, blob.ErrPermission},
		{"invalid auth info", serviceError(401, "InvalidAuthenticationInfo"), none, blob.ErrPermission},
		{"401 without code", serviceError(401, ""), none, blob.ErrPermission},
		{"public access off", serviceError(409, "PublicAccessNotPermitted"), none, blob.ErrPermission},
		{"leased by someone", serviceError(412, "LeaseIdMissing"), none, blob.ErrPermission},
		{"server busy", serviceError(503, "ServerBusy"), none, blob.ErrThrottled},
		{"503 without code", serviceError(503, ""), none, blob.ErrThrottled},
		{"operation timed out", serviceError(500, "OperationTimedOut"), none, blob.ErrThrottled},
		{"429", serviceError(429, ""), none, blob.ErrThrottled},
		{"internal error", serviceError(500, "InternalError"), none, nil},
		{"bad gateway", serviceError(502, ""), none, blob.ErrUnavailable},
		{"invalid block id", serviceError(400, "InvalidBlockId"), none, blob.ErrInvalid},
		{"invalid block list", serviceError(400, "InvalidBlockList"), none, blob.ErrInvalid},
		{"invalid query", serviceError(400, "InvalidQueryParameterValue"), none, blob.ErrInvalid},
		{"invalid uri", serviceError(400, "InvalidUri"), none, blob.ErrInvalid},
		{"400 without code", serviceError(400, ""), none, blob.ErrInvalid},
		{"invalid range elsewhere", serviceError(416, "InvalidRange"), none, blob.ErrInvalid},
		{"block count", serviceError(409, "BlockCountExceedsLimit"), none, blob.ErrTooLarge},
		{"body too large", serviceError(413, "RequestBodyTooLarge"), none, blob.ErrTooLarge},
		{"md5 mismatch", serviceError(400, "Md5Mismatch"), none, blob.ErrChecksum},
		{"crc64 mismatch", serviceError(400, "Crc64Mismatch"), none, blob.ErrChecksum},
		{"connection refused", &url.Error{Op: "Get", URL: "http://127.0.0.1:1", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}, none, blob.ErrUnavailable},
		{"dns", &net.DNSError{Err: "no such host", Name: "acct.invalid", IsNotFound: true}, none, blob.ErrUnavailable},
		{"unknown CA", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, none, blob.ErrUnavailable},
		{"wrong host", x509.HostnameError{Host: "x"}, none, blob.ErrUnavailable},
		{"tls to plain http", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, none, blob.ErrUnavailable},
		{"body cut short", io.ErrUnexpectedEOF, none, blob.ErrUnavailable},
		{"other", errors.New("something else"), none, nil},
	}
	sentinels := []error{blob.ErrNotFound, blob.ErrContainerNotFound, blob.ErrStale, blob.ErrExists, blob.ErrPermission,
		blob.ErrThrottled, blob.ErrInvalid, blob.ErrTooLarge, blob.ErrChecksum, blob.ErrUnavailable}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := translate(context.Background(), "stat", "a/b", tc.cond, tc.err)
			if !errors.Is(got, tc.err) {
				t.Errorf("cause lost: %v", got)
			}
			if !strings.HasPrefix(got.Error(), `stat "a/b": `) {
				t.Errorf("message %q does not name the operation and blob", got)
			}
			for _, s := range sentinels {
				if is, want := errors.Is(got, s), s == tc.want; is != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", got, s, is, want)
				}
			}
			if strings.Contains(got.Error(), "\n") {
				t.Errorf("message spans lines: %q", got)
			}
		})
	}
}

func TestTranslateContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := translate(ctx, "read", "x", blob.Conditions{}, fmt.Errorf("wrapped: %w", context.Canceled))
	if !errors.Is(err, context.Canceled) || errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("cancelled caller: %v, want a plain context error", err)
	}
	// A per-try timeout while the caller still waits is the endpoint's
	// fault, but the cause is kept.
	err = translate(context.Background(), "read", "x", blob.Conditions{}, context.DeadlineExceeded)
	if !errors.Is(err, blob.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("try timeout: %v", err)
	}
	if translate(context.Background(), "read", "x", blob.Conditions{}, nil) != nil {
		t.Fatal("nil error translated to non-nil")
	}
}

func TestAssemble(t *testing.T) {
	const M = ChecksumRange
	part := func(off int64, l, n int, size int64, etag blob.ETag) rangeResult {
		return rangeResult{off: off, len: l, n: n, size: size, etag: etag}
	}
	past := func(off int64, l int) rangeResult { return rangeResult{off: off, len: l, size: -1, past: true} }
	tests := []struct {
		name    string
		parts   []rangeResult
		off     int64
		length  int
		want    int
		wantErr bool
	}{
		{"all full", []rangeResult{part(0, M, M, 3*M, "a"), part(M, M, M, 3*M, "a")}, 0, 2 * M, 2 * M, false},
		{"short tail then past", []rangeResult{part(0, M, 10, 10, "a"), past(M, M)}, 0, 2 * M, 10, false},
		{"all past", []rangeResult{past(5*M, M), past(6*M, M)}, 5 * M, 2 * M, 0, false},
		{"etags differ", []rangeResult{part(0, M, M, 3*M, "a"), part(M, M, M, 3*M, "b")}, 0, 2 * M, 0, true},
		{"sizes differ", []rangeResult{part(0, M, M, 3*M, "a"), part(M, M, 5, M+5, "a")}, 0, 2 * M, 0, true},
		{"past before the end", []rangeResult{part(0, M, M, 3*M, "a"), past(M, M)}, 0, 2 * M, 0, true},
		{"short piece", []rangeResult{part(0, M, M-1, 3*M, "a"), part(M, M, M, 3*M, "a")}, 0, 2 * M, 0, true},
	}
	for _, tc := range tests {
		n, err := assemble(tc.parts, tc.off, tc.length)
		if n != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: assemble = %d, %v; want %d, error %v", tc.name, n, err, tc.want, tc.wantErr)
		}
		if err != nil && !errors.Is(err, blob.ErrStale) {
			t.Errorf("%s: inconsistency is not ErrStale: %v", tc.name, err)
		}
	}
}

func TestTotalSize(t *testing.T) {
	for in, want := range map[string]int64{"bytes 0-99/1000": 1000, "bytes */77": 77, "bytes 0-1/*": -1, "": -1, "garbage": -1} {
		if got := totalSize(in); got != want {
			t.Errorf("totalSize(%q) = %d, want %d", in, got, want)
		}
	}
}
