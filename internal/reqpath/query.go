package reqpath

import (
	"net/url"
	"strings"
)

// DropQueryParams drops the pairs drop selects from rawQuery and keeps
// every other byte as it came: what is not dropped is forwarded exactly.
func DropQueryParams(rawQuery string, drop func(key, value string) bool) string {
	if rawQuery == "" {
		return ""
	}
	kept := make([]string, 0, strings.Count(rawQuery, "&")+1)
	for pair := range strings.SplitSeq(rawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		key, _ := url.QueryUnescape(k)
		val, _ := url.QueryUnescape(v)
		if !drop(key, val) {
			kept = append(kept, pair)
		}
	}
	return strings.Join(kept, "&")
}
