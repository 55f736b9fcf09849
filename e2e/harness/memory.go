package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// MemoryContains reports, for each needle, whether the live process pid
// holds it anywhere in its readable memory (/proc/<pid>/maps and mem: the
// test is the process's parent, so it may read them). Only processes the
// test started are read.
func MemoryContains(t testing.TB, pid int, needles ...[]byte) []bool {
	t.Helper()
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatalf("reading the memory map of %d: %v", pid, err)
	}
	defer maps.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatalf("reading the memory of %d: %v", pid, err)
	}
	defer mem.Close()
	found := make([]bool, len(needles))
	longest := 0
	for _, n := range needles {
		longest = max(longest, len(n))
	}
	regions, read := 0, int64(0)
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1][0] != 'r' || len(f) >= 6 && strings.HasPrefix(f[5], "[v") { // [vvar], [vsyscall]
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		// In pieces, each overlapping the last by a needle's length.
		const piece = 4 << 20
		buf := make([]byte, piece+longest)
		for off := start; off < end; off += piece {
			n, _ := mem.ReadAt(buf[:min(uint64(len(buf)), end-off)], int64(off))
			read += int64(n)
			for i, needle := range needles {
				found[i] = found[i] || bytes.Contains(buf[:n], needle)
			}
		}
		regions++
	}
	if regions == 0 || read == 0 {
		t.Fatalf("read nothing of the memory of %d", pid)
	}
	return found
}
