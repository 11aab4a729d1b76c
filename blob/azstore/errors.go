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

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/blobfs/blobfs/blob"
)

// This file is the only place where SDK and transport errors become blob
// sentinels. Matching is on the service's error code (bloberror.HasCode)
// and the HTTP status of *azcore.ResponseError, and on error types for
// transport failures — never on message text.

// respError keeps an *azcore.ResponseError as the cause but prints one
// line: the SDK's own message spans a dozen lines with the response body.
type respError struct{ re *azcore.ResponseError }

func (e respError) Error() string {
	msg := fmt.Sprintf("HTTP %d %s", e.re.StatusCode, e.re.ErrorCode)
	if r := e.re.RawResponse; r != nil {
		if id := r.Header.Get("x-ms-request-id"); id != "" {
			msg += " (request id " + id + ")"
		}
	}
	return msg
}

func (e respError) Unwrap() error { return e.re }

// compact returns err with a service response's one-line form.
func compact(err error) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return respError{re}
	}
	return err
}

// translate wraps err from operation op on name with the blob sentinel it
// means, keeping err as the cause: "stat \"x\": blob not found: HTTP 404
// BlobNotFound". Context errors of the caller's ctx stay plain context
// errors. cond is the write condition the request carried, because the
// service reports a failed If-None-Match: * as 409 or 412 and only the
// caller knows which condition it was.
func translate(ctx context.Context, op, name string, cond blob.Conditions, err error) error {
	if err == nil {
		return nil
	}
	what := op
	if name != "" {
		what = fmt.Sprintf("%s %q", op, name)
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		cause := respError{re}
		if s := classify(re, cond); s != nil {
			return fmt.Errorf("%s: %w: %w", what, s, cause)
		}
		return fmt.Errorf("%s: %w", what, cause)
	}
	if transportFailure(err) {
		return fmt.Errorf("%s: %w: %w", what, blob.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// classify picks the sentinel for a service response, or nil when none
// fits (the fs layer then reports EIO and logs the cause).
func classify(re *azcore.ResponseError, cond blob.Conditions) error {
	err := error(re)
	status := re.StatusCode
	switch {
	// The container first: a missing container must never read as a
	// missing file.
	case bloberror.HasCode(err, bloberror.ContainerNotFound, bloberror.ContainerBeingDeleted, bloberror.ContainerDisabled):
		return blob.ErrContainerNotFound

	case cond.IfNoneMatchAny && (status == http.StatusConflict || status == http.StatusPreconditionFailed) &&
		!bloberror.HasCode(err, bloberror.SourceConditionNotMet):
		return blob.ErrExists
	case bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ContainerAlreadyExists, bloberror.ResourceAlreadyExists):
		return blob.ErrExists

	case bloberror.HasCode(err, bloberror.BlobArchived, bloberror.BlobBeingRehydrated):
		return blob.ErrArchived

	case bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ResourceNotFound, bloberror.CannotVerifyCopySource) && status == http.StatusNotFound,
		status == http.StatusNotFound:
		return blob.ErrNotFound

	// Someone else's lease blocks the write: the operation is not
	// allowed now, which is closer to EACCES than to a changed ETag.
	case bloberror.HasCode(err, bloberror.LeaseIDMissing, bloberror.LeaseIDMismatchWithBlobOperation,
		bloberror.LeaseNotPresentWithBlobOperation, bloberror.LeaseLost, bloberror.LeaseAlreadyPresent):
		return blob.ErrPermission
	case bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.SourceConditionNotMet, bloberror.TargetConditionNotMet),
		status == http.StatusPreconditionFailed:
		return blob.ErrStale

	case bloberror.HasCode(err, bloberror.MD5Mismatch, bloberror.CRC64Mismatch):
		return blob.ErrChecksum

	case bloberror.HasCode(err, bloberror.BlockCountExceedsLimit, bloberror.RequestBodyTooLarge, bloberror.BlockListTooLong,
		bloberror.MetadataTooLarge, bloberror.ContentLengthLargerThanTierLimit),
		status == http.StatusRequestEntityTooLarge:
		return blob.ErrTooLarge

	case bloberror.HasCode(err, bloberror.AuthenticationFailed, bloberror.AuthorizationFailure,
		bloberror.AuthorizationPermissionMismatch, bloberror.AuthorizationProtocolMismatch,
		bloberror.AuthorizationResourceTypeMismatch, bloberror.AuthorizationServiceMismatch,
		bloberror.AuthorizationSourceIPMismatch, bloberror.InvalidAuthenticationInfo,
		bloberror.InsufficientAccountPermissions, bloberror.NoAuthenticationInformation,
		bloberror.AccountIsDisabled, bloberror.BlobImmutableDueToPolicy, bloberror.UnauthorizedBlobOverwrite,
		"PublicAccessNotPermitted", "KeyBasedAuthenticationNotPermitted"),
		status == http.StatusUnauthorized, status == http.StatusForbidden:
		return blob.ErrPermission

	// What is left of 503 and 429 after the SDK's retries is throttling;
	// 500 OperationTimedOut is how the service says it was too busy to
	// finish in time.
	case bloberror.HasCode(err, bloberror.ServerBusy, bloberror.OperationTimedOut, "IngressOverAccountLimit", "EgressOverAccountLimit", "TpsOverAccountLimit"),
		status == http.StatusServiceUnavailable, status == http.StatusTooManyRequests:
		return blob.ErrThrottled
	case status == http.StatusBadGateway, status == http.StatusGatewayTimeout:
		return blob.ErrUnavailable

	case bloberror.HasCode(err, bloberror.InvalidBlockID, bloberror.InvalidBlockList, bloberror.InvalidBlobOrBlock,
		bloberror.InvalidQueryParameterValue, bloberror.InvalidURI, bloberror.InvalidHeaderValue,
		bloberror.InvalidInput, bloberror.InvalidMetadata, bloberror.EmptyMetadataKey, bloberror.InvalidResourceName,
		bloberror.InvalidRange, bloberror.InvalidMD5, bloberror.InvalidBlobType, bloberror.InvalidXMLDocument,
		bloberror.OutOfRangeInput, bloberror.OutOfRangeQueryParameterValue, bloberror.MissingRequiredHeader,
		bloberror.MultipleConditionHeadersNotSupported, bloberror.UnsupportedHeader, bloberror.InvalidOperation),
		status == http.StatusBadRequest, status == http.StatusRequestedRangeNotSatisfiable:
		return blob.ErrInvalid
	}
	return nil
}

// transportFailure reports whether err means the endpoint could not be
// reached or spoken to: refused or reset connections, DNS, TLS, a dial
// the loopback guard refused, a per-try timeout — after the SDK's retries.
func transportFailure(err error) bool {
	var (
		opErr    *net.OpError
		dnsErr   *net.DNSError
		urlErr   *url.Error
		certErr  *tls.CertificateVerificationError
		recErr   tls.RecordHeaderError
		authErr  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalErr x509.CertificateInvalidError
	)
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.As(err, &urlErr) ||
		errors.As(err, &certErr) || errors.As(err, &recErr) || errors.As(err, &authErr) ||
		errors.As(err, &hostErr) || errors.As(err, &invalErr) ||
		// A try that hit TryTimeout while the caller's ctx is live.
		errors.Is(err, context.DeadlineExceeded) ||
		// The connection closed in the middle of a response body.
		errors.Is(err, io.ErrUnexpectedEOF)
}
