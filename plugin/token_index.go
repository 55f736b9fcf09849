package plugin

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/token"
)

// The accessor index is kept in shards: accessors/<shard>/<accessor> ->
// accessorEntry, where shard is the two characters after the accessor's
// "pha_" (token.AccessorShard). Vault's storage lists a whole directory at
// once, so one directory of every accessor would put a million strings in
// memory to list a million tokens; a shard holds about 1/500 of them (the
// first of the two characters is 0-7: an accessor is 128 random bits). Shards
// sort like the accessors in them, so walking the sorted shards and sorting
// each one's keys yields every accessor in order.
//
// Earlier versions kept the index in one directory, accessor/<accessor>
// (accessorPrefix). Those entries are still read, listed and tidied, and tidy
// moves the live ones into the shards, so that directory empties.
const (
	accessorsPrefix = "accessors/" // accessors/<shard>/<accessor> -> accessorEntry
	accessorPrefix  = "accessor/"  // accessor/<accessor> -> accessorEntry, the old layout
)

// accessorKey is where the index entry of an accessor is written.
func accessorKey(accessor string) (string, bool) {
	shard, ok := token.AccessorShard(accessor)
	if !ok {
		return "", false
	}
	return accessorsPrefix + shard + "/" + accessor, true
}

// putAccessor indexes a token record by its accessor.
func putAccessor(ctx context.Context, s logical.Storage, accessor, tokenHMAC string) error {
	key, ok := accessorKey(accessor)
	if !ok {
		return fmt.Errorf("malformed accessor %q", accessor)
	}
	entry, err := logical.StorageEntryJSON(key, accessorEntry{TokenHMAC: tokenHMAC})
	if err != nil {
		return err
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("writing accessor %s: %w", accessor, err)
	}
	return nil
}

// lookupAccessor returns the HMAC a token record is stored under, or "".
func lookupAccessor(ctx context.Context, s logical.Storage, accessor string) (string, error) {
	keys := []string{accessorPrefix + accessor} // written by earlier versions
	if key, ok := accessorKey(accessor); ok {
		keys = []string{key, keys[0]}
	}
	for _, key := range keys {
		a, err := readJSON[accessorEntry](ctx, s, key)
		if err != nil {
			return "", fmt.Errorf("reading accessor %s: %w", accessor, err)
		}
		if a != nil {
			return a.TokenHMAC, nil
		}
	}
	return "", nil
}

// deleteAccessor removes an accessor's index entry, in either layout.
func deleteAccessor(ctx context.Context, s logical.Storage, accessor string) error {
	if key, ok := accessorKey(accessor); ok {
		if err := s.Delete(ctx, key); err != nil {
			return fmt.Errorf("deleting accessor %s: %w", accessor, err)
		}
	}
	return deleteLegacyAccessor(ctx, s, accessor)
}

func deleteLegacyAccessor(ctx context.Context, s logical.Storage, accessor string) error {
	if err := s.Delete(ctx, accessorPrefix+accessor); err != nil {
		return fmt.Errorf("deleting accessor %s: %w", accessor, err)
	}
	return nil
}

// walkAccessors calls fn with every indexed accessor sorting after after
// (all when it is ""), in order, until fn returns false. legacy says the
// accessor has an entry in the old, unsharded layout (and maybe one in the
// new). It lists the index one shard at a time and skips the shards before
// after, so it holds at most the shard names and one shard's keys, plus the
// old layout's keys while any are left.
func walkAccessors(ctx context.Context, s logical.Storage, after string, fn func(accessor string, legacy bool) (bool, error)) error {
	legacy, err := sortedList(ctx, s, accessorPrefix, after)
	if err != nil {
		return err
	}
	shards, err := sortedList(ctx, s, accessorsPrefix, "")
	if err != nil {
		return err
	}
	for _, dir := range shards {
		first := token.AccessorPrefix + strings.TrimSuffix(dir, "/")
		if !strings.HasSuffix(dir, "/") || after > first && !strings.HasPrefix(after, first) {
			continue // not a shard, or every key in it sorts before after
		}
		keys, err := sortedList(ctx, s, accessorsPrefix+dir, after)
		if err != nil {
			return err
		}
		// The old layout's accessors that sort before the end of this shard.
		n := 0
		for n < len(legacy) && (legacy[n] < first || strings.HasPrefix(legacy[n], first)) {
			n++
		}
		more, err := mergeAccessors(keys, legacy[:n], fn)
		if err != nil || !more {
			return err
		}
		legacy = legacy[n:]
	}
	_, err = mergeAccessors(nil, legacy, fn)
	return err
}

// mergeAccessors calls fn with the union of two sorted lists, in order, until
// it returns false; an accessor in both is given once, as legacy.
func mergeAccessors(keys, legacy []string, fn func(accessor string, legacy bool) (bool, error)) (bool, error) {
	for len(keys) > 0 || len(legacy) > 0 {
		var accessor string
		old := len(keys) == 0 || len(legacy) > 0 && legacy[0] <= keys[0]
		if old {
			accessor, legacy = legacy[0], legacy[1:]
			if len(keys) > 0 && keys[0] == accessor {
				keys = keys[1:]
			}
		} else {
			accessor, keys = keys[0], keys[1:]
		}
		if more, err := fn(accessor, old); err != nil || !more {
			return false, err
		}
	}
	return true, nil
}

// sortedList lists a directory of the index, sorted, without the keys that
// sort up to after.
func sortedList(ctx context.Context, s logical.Storage, prefix, after string) ([]string, error) {
	keys, err := s.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	slices.Sort(keys)
	if after != "" {
		i, found := slices.BinarySearch(keys, after)
		if found {
			i++
		}
		keys = keys[i:]
	}
	return keys, nil
}
