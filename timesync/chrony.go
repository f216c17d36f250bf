package timesync

import (
	"errors"
	"fmt"
	"strings"
)

// ChronyConfig writes a chrony.conf under which chronyd keeps node's clock
// with sources ("host" or "host:port"); why, a comment, says which duty or
// setting asks for them. Meridian itself only watches the clock.
func ChronyConfig(node string, sources []string, why string) (string, error) {
	if len(sources) == 0 {
		return "", errors.New("no NTP source to configure")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# chrony.conf for Meridian node %q, from 'meridian time chrony-config'.\n", node)
	for _, l := range strings.Split(why, "\n") {
		fmt.Fprintf(&b, "# %s\n", l)
	}
	b.WriteString("# Meridian watches the offset from the same sources and raises an alarm when\n# it grows too large; chronyd is what keeps the clock right.\n\n")
	for _, s := range sources {
		host, port, err := splitSource(s)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "server %s", host)
		if port != DefaultPort {
			fmt.Fprintf(&b, " port %d", port)
		}
		b.WriteString(" iburst\n")
	}
	b.WriteString(`
# Step the clock if it is off by more than 1 s in the first three updates
# (at boot); slew it afterwards, so that recorded times never jump.
makestep 1.0 3

# Keep the hardware clock in step, for the next boot.
rtcsync

driftfile /var/lib/chrony/chrony.drift
`)
	return b.String(), nil
}
