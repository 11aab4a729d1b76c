package cli

import (
	"github.com/spf13/pflag"
)

// secretFlags are flag names people reach for out of habit (other tools
// take them). blobfs declares them hidden only to refuse them with advice:
// a secret in argv shows in `ps`, /proc/PID/cmdline and shell history.
// The value is never echoed.
var secretFlags = []struct{ name, env string }{
	{"account-key", "AZURE_STORAGE_ACCESS_KEY"},
	{"access-key", "AZURE_STORAGE_ACCESS_KEY"},
	{"sas", "AZURE_STORAGE_SAS_TOKEN"},
	{"sas-token", "AZURE_STORAGE_SAS_TOKEN"},
	{"client-secret", "AZURE_CLIENT_SECRET"},
}

// addSecretTraps declares the hidden secret flags on fs and returns a check
// to run after parsing.
func addSecretTraps(fs *pflag.FlagSet) func() error {
	for _, s := range secretFlags {
		fs.String(s.name, "", "")
		_ = fs.MarkHidden(s.name)
	}
	return func() error {
		for _, s := range secretFlags {
			if fs.Changed(s.name) {
				return usageErrorf("--%s: blobfs never takes secrets on the command line (they show in ps and shell history); "+
					"set %s in the environment or use --config-file, and rotate the secret you just typed", s.name, s.env)
			}
		}
		return nil
	}
}

// envDefault sets *dst from the environment variable when the flag was not
// given: flags beat the environment.
func envDefault(d *Deps, fs *pflag.FlagSet, dst *string, env string, flags ...string) {
	for _, f := range flags {
		if fs.Changed(f) {
			return
		}
	}
	if v := d.env(env); v != "" {
		*dst = v
	}
}
