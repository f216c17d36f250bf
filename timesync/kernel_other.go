//go:build !linux

package timesync

import "github.com/meridian-vpn/meridian/api"

// readKernel reports the kernel's clock as unknown: only Linux's is read.
func readKernel() api.KernelClock { return api.KernelClock{} }
