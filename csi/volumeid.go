package csi

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/blobfs/blobfs/blob"
)

// ErrInvalid marks a request the caller must fix. Every validation error
// wraps it; the servers answer it with codes.InvalidArgument. Messages name
// the offending key and never contain a secret's value.
var ErrInvalid = errors.New("invalid argument")

// VolumeID says where a volume's data lives. Its string form is the CSI
// volume id (the PV's volumeHandle):
//
//	blobfs#<account>#<container>[#<prefix>[#<flags>]]
//
// where <prefix> is the blob name prefix the volume is confined to, with
// '%', '#' and control characters percent-encoded (so "datasets/imagenet"
// stays readable and short, and '#' inside a blob name cannot shift the
// fields), and <flags> is a comma-separated list; the only flag today is
// "owned": the container was created by this driver for this one volume,
// so DeleteVolume may delete it. A volume without "owned" is never
// deleted: the driver did not create that data.
//
// Examples:
//
//	blobfs#mydata#datasets                      a whole container (static PV)
//	blobfs#mydata#shared#ckpt/pvc-1234          a prefix of a shared container
//	blobfs#mydata#pvc-1234##owned               a container made for one PVC
//
// The account may be empty in a hand-written handle; the node then takes it
// from the storageAccount attribute or the azurestorageaccountname secret.
// Handles that do not start with "blobfs#" are accepted for static PVs
// written for blob-csi-driver (any unique string, with containerName in
// volumeAttributes); see Node.
type VolumeID struct {
	Account   string
	Container string
	// Prefix is "" for the whole container; it never starts or ends with '/'.
	Prefix string
	// Owned: the driver created the container for this volume.
	Owned bool
}

// volumeIDScheme starts every id this driver generates.
const volumeIDScheme = "blobfs"

// flagOwned is the volume id flag of a container created for the volume.
const flagOwned = "owned"

// maxVolumeIDLen is the CSI size limit for strings. CreateVolume keeps the
// ids it makes within it; hand-written handles are not held to it.
const maxVolumeIDLen = 128

// String returns the volume id, omitting empty trailing fields.
func (v VolumeID) String() string {
	fields := []string{volumeIDScheme, v.Account, v.Container, escapePrefix(v.Prefix)}
	if v.Owned {
		fields = append(fields, flagOwned)
	}
	for len(fields) > 3 && fields[len(fields)-1] == "" {
		fields = fields[:len(fields)-1]
	}
	return strings.Join(fields, "#")
}

// IsBlobfsVolumeID reports whether id claims this driver's format (and so
// must parse): it starts with "blobfs#".
func IsBlobfsVolumeID(id string) bool { return strings.HasPrefix(id, volumeIDScheme+"#") }

// ParseVolumeID parses a volume id made by VolumeID.String. Errors wrap
// ErrInvalid and name the bad field.
func ParseVolumeID(id string) (VolumeID, error) {
	var v VolumeID
	if !IsBlobfsVolumeID(id) {
		return v, fmt.Errorf("volume id %q: want blobfs#ACCOUNT#CONTAINER[#PREFIX[#FLAGS]]: %w", id, ErrInvalid)
	}
	f := strings.Split(id, "#")
	if len(f) < 3 || len(f) > 5 {
		return v, fmt.Errorf("volume id %q: want 3 to 5 '#'-separated fields, got %d: %w", id, len(f), ErrInvalid)
	}
	v.Account, v.Container = f[1], f[2]
	if v.Account != "" {
		if err := validateAccount(v.Account); err != nil {
			return VolumeID{}, fmt.Errorf("volume id %q: %w", id, err)
		}
	}
	if err := validateContainer(v.Container); err != nil {
		return VolumeID{}, fmt.Errorf("volume id %q: %w", id, err)
	}
	if len(f) > 3 {
		p, err := url.PathUnescape(f[3])
		if err != nil {
			return VolumeID{}, fmt.Errorf("volume id %q: prefix is not percent-encoded correctly: %w", id, ErrInvalid)
		}
		if v.Prefix, err = cleanPrefix(p); err != nil {
			return VolumeID{}, fmt.Errorf("volume id %q: %w", id, err)
		}
	}
	if len(f) > 4 {
		for _, fl := range strings.Split(f[4], ",") {
			switch fl {
			case flagOwned:
				v.Owned = true
			case "":
			default:
				return VolumeID{}, fmt.Errorf("volume id %q: unknown flag %q (a newer driver's volume?): %w", id, fl, ErrInvalid)
			}
		}
	}
	return v, nil
}

// escapePrefix percent-encodes the bytes that cannot appear raw in an id
// field: '%', '#' and control characters.
func escapePrefix(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' || c == '#' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// cleanPrefix validates a blob name prefix and strips one trailing '/'.
// It refuses '.' and '..' segments (a prefix must not escape upwards in
// anything that maps it to a path), empty segments, a leading '/' and
// control characters.
func cleanPrefix(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	p = strings.TrimSuffix(p, "/")
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("prefix contains a control character: %w", ErrInvalid)
		}
	}
	if err := blob.ValidateName(p); err != nil {
		return "", fmt.Errorf("prefix %q: want a blob name prefix without leading '/', empty, '.' or '..' segments: %w", p, ErrInvalid)
	}
	return p, nil
}

// validateAccount checks a storage account name: 3-24 lower-case letters
// and digits.
func validateAccount(name string) error {
	ok := len(name) >= 3 && len(name) <= 24
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("storage account %q: want 3-24 lower-case letters and digits: %w", name, ErrInvalid)
	}
	return nil
}

// validateContainer checks the service's container naming rules: 3-63
// lower-case letters, digits and single hyphens, starting and ending with a
// letter or digit, or $root.
func validateContainer(name string) error {
	if name == "$root" {
		return nil
	}
	ok := len(name) >= 3 && len(name) <= 63 && !strings.Contains(name, "--") &&
		name[0] != '-' && name[len(name)-1] != '-'
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("container name %q: want 3-63 lower-case letters, digits and single hyphens: %w", name, ErrInvalid)
	}
	return nil
}
