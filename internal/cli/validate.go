package cli

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// Azure naming rules, checked early so a typo is a usage error rather than a
// 400 from the service minutes later.

// validateAccount checks a storage account name: 3-24 lowercase letters and
// digits.
func validateAccount(name string) error {
	if len(name) < 3 || len(name) > 24 {
		return fmt.Errorf("storage account name %q: must be 3-24 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("storage account name %q: only lowercase letters and digits are allowed", name)
		}
	}
	return nil
}

// validateContainer checks a container name: 3-63 lowercase letters, digits
// and single dashes, starting and ending with a letter or digit; or one of
// the special containers $root, $web, $logs.
func validateContainer(name string) error {
	switch name {
	case "$root", "$web", "$logs":
		return nil
	}
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("container name %q: must be 3-63 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("container name %q: only lowercase letters, digits and '-' are allowed", name)
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--") {
		return fmt.Errorf("container name %q: '-' must sit between letters or digits", name)
	}
	return nil
}

// validateEndpoint checks a blob service URL such as
// https://ACCOUNT.blob.core.windows.net or http://127.0.0.1:10000/devstoreaccount1.
// A query string is refused: it is usually a SAS token, which belongs in
// AZURE_STORAGE_SAS_TOKEN, not in argv. The error never echoes the query.
func validateEndpoint(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("endpoint is not a URL")
	}
	if u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("endpoint %s://%s%s carries a query string or user info (a SAS token or key?): "+
			"pass credentials through the environment (AZURE_STORAGE_SAS_TOKEN) or a config file, never in argv",
			u.Scheme, u.Host, u.Path)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("endpoint %q: scheme must be https (or http for a local emulator)", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("endpoint %q: no host", raw)
	}
	return nil
}

// validateListenAddr checks a HOST:PORT listen address (":9090", "127.0.0.1:9090").
func validateListenAddr(flag, addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return fmt.Errorf("%s %q: want HOST:PORT, e.g. 127.0.0.1:9090 or :9090", flag, addr)
	}
	return nil
}

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// validateGUID checks an Entra ID client or tenant ID.
func validateGUID(flag, s string) error {
	if !guidRE.MatchString(s) {
		return fmt.Errorf("%s %q: want a GUID like 00000000-0000-0000-0000-000000000000", flag, s)
	}
	return nil
}

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validateDNSLabel checks a Kubernetes namespace name (RFC 1123 label).
func validateDNSLabel(flag, s string) error {
	if len(s) == 0 || len(s) > 63 || !dnsLabelRE.MatchString(s) {
		return fmt.Errorf("%s %q: want a DNS label (lowercase letters, digits, '-', at most 63 characters)", flag, s)
	}
	return nil
}
