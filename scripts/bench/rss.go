package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// rssSampler samples a process's resident memory every interval.
type rssSampler struct {
	done    chan struct{}
	stopped chan struct{}
	samples []float64
	peak    float64
}

func newRSSSampler(pid int, interval time.Duration) *rssSampler {
	s := &rssSampler{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(s.stopped)
		if pid == 0 {
			return
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if rss, peak, ok := readStatus(pid); ok {
				s.samples = append(s.samples, rss)
				s.peak = max(s.peak, peak)
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends sampling and returns the peak and the samples, in MiB.
func (s *rssSampler) stop() (float64, []float64) {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	<-s.stopped
	return s.peak, s.samples
}

// readStatus reads VmRSS and VmHWM (the peak) from /proc, in MiB.
func readStatus(pid int) (rss, peak float64, ok bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak, rss > 0
}

func machine() map[string]string {
	m := map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if strings.HasPrefix(line, "model name") {
				_, v, _ := strings.Cut(line, ":")
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
