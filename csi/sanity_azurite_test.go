package csi

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/blobfs/blobfs/blob/azstore"
	"github.com/blobfs/blobfs/internal/azurite"
	"github.com/blobfs/blobfs/internal/testenv"
)

// azuriteSanityEnv is the real backend of the sanity run
// (BLOBFS_CSI_SANITY_BACKEND=azurite): the blobfs binary built from this
// tree, real `blobfs mount` daemons started by the mount supervisor, real
// bind mounts, and containers created and deleted in Azurite through
// azstore.Containers.
func azuriteSanityEnv(t *testing.T, dir string) sanityEnv {
	testenv.RequireFUSE(t)
	srv := azurite.StartT(t, azurite.Options{})
	bin := filepath.Join(dir, "blobfs")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(gobin, "build", "-o", bin, "github.com/blobfs/blobfs/cmd/blobfs")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("building blobfs: %v", err)
	}
	cleanupMounts(t, dir)
	sup, err := NewSupervisor(SupervisorConfig{
		StateDir: filepath.Join(dir, "state"), CacheDir: filepath.Join(dir, "cache"),
		MountRoots: []string{dir}, Runner: ExecRunner(bin),
	})
	if err != nil {
		t.Fatal(err)
	}
	admins := func(_ context.Context, account string, _ Credentials) (ContainerAdmin, error) {
		return azstore.NewContainers(azstore.Config{
			ServiceURL: srv.BlobEndpoint(),
			Credential: azstore.SharedKey(srv.Account(), srv.Key()),
			Transport:  &http.Client{Transport: srv.Transport()},
		})
	}
	return sanityEnv{
		mounter:     &SystemMounter{Volumes: sup},
		admins:      admins,
		account:     srv.Account(),
		key:         srv.Key(),
		params:      map[string]string{AttrEndpoint: srv.BlobEndpoint()},
		allowCustom: true,
	}
}
