package mountinfo

import (
	"slices"
	"strings"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:         "/mnt/plain",
		`/mnt/with\040space`: "/mnt/with space",
		`/a\011tab\012nl`:    "/a\ttab\nnl",
		`/back\134slash`:     `/back\slash`,
		`/short\04`:          `/short\04`,
		`/not\999octal`:      `/not\999octal`,
		`/end\`:              `/end\`,
		`/two\040\040spaces`: "/two  spaces",
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	table := `22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
97 29 0:52 / /tmp/m\040x rw,nosuid,nodev,relatime shared:51 - fuse.blobfs blobfs:acct/data rw,user_id=0,group_id=0,default_permissions
98 29 0:52 / /tmp/m\040x/bind rw,relatime - fuse.blobfs blobfs:acct/data rw
garbage line
`
	ms, err := parse(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Dev: "0:21", Point: "/proc", FSType: "proc"},
		{Dev: "0:52", Point: "/tmp/m x", FSType: "fuse.blobfs"},
		{Dev: "0:52", Point: "/tmp/m x/bind", FSType: "fuse.blobfs"},
	}
	if !slices.Equal(ms, want) {
		t.Fatalf("parse = %+v\nwant %+v", ms, want)
	}
	if ms[0].IsFUSE() || !ms[1].IsFUSE() {
		t.Fatal("IsFUSE")
	}
}

func TestReadThisProcess(t *testing.T) {
	ok, err := IsMountPoint("/")
	if err != nil || !ok {
		t.Fatalf(`IsMountPoint("/") = %v, %v`, ok, err)
	}
	if ok, _ := IsMountPoint("/surely/not/a/mount"); ok {
		t.Fatal("a missing path is a mount point")
	}
}
