package local

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/signet-dev/signet/backends"
)

// Certificate chains live beside the key file: <version>.x5c.<generation>,
// PEM, the version's certificate first. Each new chain of a version (the
// first, a renewal) is written as the next generation with the same
// exclusive link as a version file, so two replicas racing to attach a
// chain keep exactly one: the second link fails and its writer reads the
// winner's. The highest generation is the one in force; older ones are
// removed by whoever sees them.

const chainInfix = ".x5c."

// chainName is the file name of a version's chain of one generation.
func chainName(id string, gen uint64) string {
	return id + chainInfix + strconv.FormatUint(gen, 10)
}

// parseChainName splits a chain file name into version and generation.
func parseChainName(name string) (id string, gen uint64, ok bool) {
	id, g, found := strings.Cut(name, chainInfix)
	if !found {
		return "", 0, false
	}
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", 0, false
	}
	gen, err := strconv.ParseUint(g, 10, 64)
	return id, gen, err == nil
}

// chains reads the chain in force of each version in a ring's directory
// listing, removing superseded generations.
func (s *Store) chains(dir string, des []os.DirEntry) (map[string][][]byte, error) {
	newest := map[string]uint64{}
	var all []string
	for _, de := range des {
		id, gen, ok := parseChainName(de.Name())
		if !ok {
			continue
		}
		all = append(all, de.Name())
		if gen > newest[id] {
			newest[id] = gen
		}
	}
	out := map[string][][]byte{}
	for id, gen := range newest {
		chain, err := readChain(filepath.Join(dir, chainName(id, gen)))
		if err != nil {
			return nil, err
		}
		out[id] = chain
	}
	for _, name := range all {
		if id, gen, _ := parseChainName(name); gen < newest[id] {
			// Complete, and replaced by a newer generation: nothing reads it.
			_ = os.Remove(filepath.Join(dir, name)) // #nosec G703 -- a file of the key directory, named by the pattern above
		}
	}
	return out, nil
}

func readChain(path string) ([][]byte, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- under the key directory, named by chainName
	if err != nil {
		return nil, errorf(backends.KindUnavailable, "reading %s: %w", path, err)
	}
	chain, err := backends.DecodePEMChain(data)
	if err != nil {
		return nil, errorf(backends.KindFailedPrecondition, "certificate chain %s: %v", path, err)
	}
	if len(chain) == 0 {
		return nil, errorf(backends.KindFailedPrecondition, "certificate chain %s holds no certificate", path)
	}
	return chain, nil
}

// PutCertificates stores chain as the version's certificate chain if the
// chain in force is old, as the next generation, created exclusively.
func (s *Store) PutCertificates(ctx context.Context, ring backends.KeyRing, versionID string, old, chain [][]byte) ([][]byte, error) {
	if len(chain) == 0 {
		return nil, errorf(backends.KindInvalidArgument, "an empty certificate chain")
	}
	if _, err := s.entry(ring, versionID); err != nil {
		return nil, err
	}
	for range 3 {
		dir, des, _, err := s.readRingDir(ctx, ring)
		if err != nil {
			return nil, err
		}
		var gen uint64
		for _, de := range des {
			if id, g, ok := parseChainName(de.Name()); ok && id == versionID && g > gen {
				gen = g
			}
		}
		var cur [][]byte
		if gen > 0 {
			if cur, err = readChain(filepath.Join(dir, chainName(versionID, gen))); err != nil {
				if backends.KindOf(err) == backends.KindUnavailable && errors.Is(err, fs.ErrNotExist) {
					continue // replaced and removed under us: read again
				}
				return nil, err
			}
		}
		if !backends.SameChain(cur, old) {
			return cur, nil
		}
		err = writeFileExclusive(ctx, filepath.Join(dir, chainName(versionID, gen+1)), backends.EncodePEMChain(chain))
		if errors.Is(err, fs.ErrExist) {
			continue // another writer was first: return what it stored
		}
		if err != nil {
			return nil, errorf(backends.KindUnavailable, "writing the certificate chain of version %s: %w", versionID, err)
		}
		if gen > 0 {
			_ = os.Remove(filepath.Join(dir, chainName(versionID, gen))) // #nosec G703 -- superseded; Versions removes it otherwise
		}
		return chain, nil
	}
	return nil, errorf(backends.KindConflict, "the certificate chain of version %s of key ring %q keeps changing", versionID, ring.Name)
}

var _ backends.CertificateStore = (*Store)(nil)
