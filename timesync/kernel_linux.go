package timesync

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-vpn/meridian/api"
)

// readKernel asks the kernel, without changing anything (adjtimex with no
// mode bits), whether a time daemon disciplines the clock.
func readKernel() api.KernelClock {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return api.KernelClock{}
	}
	return api.KernelClock{
		Known:    true,
		Synced:   tx.Status&unix.STA_UNSYNC == 0 && state != unix.TIME_ERROR,
		MaxError: time.Duration(tx.Maxerror) * time.Microsecond,
		EstError: time.Duration(tx.Esterror) * time.Microsecond,
	}
}
