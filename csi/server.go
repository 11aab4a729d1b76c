package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DriverName is the CSI driver name blobfs registers (the CSIDriver
// object's name and every PV's spec.csi.driver). It follows the
// <name>.csi.<vendor domain> convention and is distinct from
// blob-csi-driver's blob.csi.azure.com, so both drivers can run in one
// cluster while volumes move over.
const DriverName = "blobfs.csi.azure.io"

// Services are the CSI services one process serves. Nil ones are not
// registered: the node DaemonSet serves Identity and Node, the controller
// Deployment Identity and Controller.
type Services struct {
	Identity   *Identity
	Controller *Controller
	Node       *Node
}

// Register adds the services to g.
func (s Services) Register(g *grpc.Server) {
	if s.Identity != nil {
		csi.RegisterIdentityServer(g, s.Identity)
	}
	if s.Controller != nil {
		csi.RegisterControllerServer(g, s.Controller)
	}
	if s.Node != nil {
		csi.RegisterNodeServer(g, s.Node)
	}
}

// NewGRPCServer returns a gRPC server with the driver's interceptor: every
// call is logged (method, volume id, code, duration; never the request,
// which carries secrets), a panic becomes codes.Internal instead of killing
// the node plugin, and errors that are not gRPC statuses are mapped to
// codes (ErrInvalid → InvalidArgument, context errors → their codes, the
// rest Internal).
func NewGRPCServer(log *slog.Logger) *grpc.Server {
	return grpc.NewServer(grpc.UnaryInterceptor(unaryInterceptor(log)))
}

// Serve serves svc on lis until ctx is done, then stops gracefully (in-
// flight calls finish; a mount in progress is not cut off half-way).
func Serve(ctx context.Context, lis net.Listener, log *slog.Logger, svc Services) error {
	g := NewGRPCServer(log)
	svc.Register(g)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("csi: serving: %w", err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		g.Stop()
	}
	return nil
}

// SocketPath returns the path of a unix:///ABSOLUTE/PATH endpoint.
func SocketPath(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "unix" || u.Host != "" || !filepath.IsAbs(u.Path) || u.RawQuery != "" {
		return "", fmt.Errorf("endpoint %q: want unix:///ABSOLUTE/PATH: %w", endpoint, ErrInvalid)
	}
	return filepath.Clean(u.Path), nil
}

// Listen listens on a unix socket endpoint (unix:///ABSOLUTE/PATH). A
// socket file left by a previous run is removed; any other file at the
// path is an error. The directory must exist: it is the volume kubelet's
// registrar (or the chart) shares, and creating it elsewhere would only
// hide a misconfiguration. The socket is made 0600: only root may talk to
// the driver.
func Listen(endpoint string) (net.Listener, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("csi: socket directory %s does not exist (mount the plugin directory there)", filepath.Dir(path))
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("csi: %s exists and is not a socket; refusing to remove it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("csi: removing stale socket: %w", err)
		}
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("csi: listen: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("csi: socket permissions: %w", err)
	}
	return lis, nil
}

// volumeRequest is what every volume-scoped request has.
type volumeRequest interface{ GetVolumeId() string }

// quietMethods are polled constantly (liveness probes, capability checks)
// and logged at debug level only.
var quietMethods = []string{"/csi.v1.Identity/", "Capabilities", "NodeGetInfo", "NodeGetVolumeStats"}

func unaryInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ctx, "csi: panic", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				resp, err = nil, status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
			}
			err = toStatus(err)
			attrs := []any{"method", info.FullMethod, "code", status.Code(err).String(), "duration", time.Since(start).Round(time.Millisecond)}
			if vr, ok := req.(volumeRequest); ok && vr.GetVolumeId() != "" {
				attrs = append(attrs, "volume_id", vr.GetVolumeId())
			}
			level := slog.LevelInfo
			for _, q := range quietMethods {
				if strings.Contains(info.FullMethod, q) {
					level = slog.LevelDebug
				}
			}
			if err != nil {
				attrs = append(attrs, "error", status.Convert(err).Message())
				if c := status.Code(err); c != codes.InvalidArgument && c != codes.NotFound && c != codes.Aborted && c != codes.AlreadyExists {
					level = slog.LevelWarn
				}
			}
			log.Log(ctx, level, "csi call", attrs...)
		}()
		return handler(ctx, req)
	}
}

// toStatus maps an error to a gRPC status error, keeping statuses (also
// wrapped ones) as they are.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	switch {
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// statusf wraps err (which keeps its own code, if it has one) with a
// message, for errors from the Mounter or the state store.
func statusf(err error, format string, args ...any) error {
	code := codes.Internal
	if s, ok := status.FromError(err); ok {
		code = s.Code()
	} else if errors.Is(err, ErrInvalid) {
		code = codes.InvalidArgument
	} else if errors.Is(err, context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	} else if errors.Is(err, context.Canceled) {
		code = codes.Canceled
	}
	msg := fmt.Sprintf(format, args...)
	if s, ok := status.FromError(err); ok {
		return status.Errorf(code, "%s: %s", msg, s.Message())
	}
	return status.Errorf(code, "%s: %v", msg, err)
}

// aborted is the answer to a call for a volume another call is working on.
func aborted(what, key string) error {
	return status.Errorf(codes.Aborted, "an operation on %s %q is already in progress; retry", what, key)
}
