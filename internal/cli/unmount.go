package cli

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/internal/mountinfo"
)

// UnmountOptions configures `blobfs unmount`.
type UnmountOptions struct {
	Mountpoint string
	Lazy       bool // detach now, clean up when no longer busy (MNT_DETACH)
}

// Validate checks the options.
func (o UnmountOptions) Validate() error {
	if o.Mountpoint == "" {
		return errors.New("empty MOUNTPOINT")
	}
	return nil
}

func newUnmountCmd(d *Deps) *cobra.Command {
	var o UnmountOptions
	cmd := &cobra.Command{
		Use:   "unmount MOUNTPOINT",
		Short: "Unmount a blobfs mount cleanly",
		Long: `Unmount the blobfs filesystem at MOUNTPOINT.

Open write sessions are committed first, so a checkpoint being written when
the job ends is not lost; the blobfs process serving the mount then exits.
The node cache stays on disk and is reused by the next mount.

If the mount is busy (a process has a file open or its working directory
inside), unmount fails and says so; --lazy detaches it from the file tree at
once and finishes when the last user lets go, like 'umount -l'.

Status: flags are parsed and validated; unmounting lands with issue #3.`,
		Example: `  blobfs unmount /mnt/data

  # A pod still has files open: detach now, finish later
  blobfs unmount --lazy /mnt/data`,
		Args: exactArgs(1, "MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Mountpoint = args[0]
			if err := o.Validate(); err != nil {
				return usageError(err)
			}
			return runUnmount(cmd.Context(), d, o)
		},
	}
	cmd.Flags().BoolVarP(&o.Lazy, "lazy", "l", false, "detach now even if busy; finish when the mount is no longer in use")
	return cmd
}

// runUnmount unmounts. The daemon notices the kernel unmount, finishes
// and exits; --lazy detaches even while files are open (MNT_DETACH).
func runUnmount(ctx context.Context, d *Deps, o UnmountOptions) error {
	abs, err := filepath.Abs(o.Mountpoint)
	if err != nil {
		return err
	}
	mounted, err := mountinfo.IsMountPoint(abs)
	if err != nil {
		return err
	}
	if !mounted {
		return fmt.Errorf("%s is not mounted", abs)
	}
	flags := 0
	if o.Lazy {
		flags = unix.MNT_DETACH
	}
	if err := unix.Unmount(abs, flags); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: busy (files are open; close them or use --lazy): %w", abs, err)
		}
		if errors.Is(err, unix.EPERM) {
			// Not root: the setuid helper may unmount a user's own mount.
			if out, ferr := exec.CommandContext(ctx, "fusermount3", "-u", abs).CombinedOutput(); ferr == nil {
				return nil
			} else {
				return fmt.Errorf("unmount %s: %w (fusermount3: %s)", abs, err, strings.TrimSpace(string(out)))
			}
		}
		return fmt.Errorf("unmount %s: %w", abs, err)
	}
	d.Logger.DebugContext(ctx, "unmounted", "mountpoint", abs)
	return nil
}
