//go:build linux

package beacon

import (
	"bufio"
	"encoding/binary"
	"net"
	"os"
	"strconv"
	"strings"
)

// processSocketsKnown: ownListeners sees every socket of the process.
const processSocketsKnown = true

// ownListeners reads the sockets this process listens on from /proc: the listening TCP sockets
// and Unix sockets of its network namespace (/proc/self/net/tcp, tcp6, unix), kept when the
// process holds them (a "socket:[inode]" link under /proc/self/fd). Nothing to read: nil.
func ownListeners() []string {
	listening := map[string]string{} // inode -> "ip:port" or "unix//path"
	readTCPListeners("/proc/self/net/tcp", listening)
	readTCPListeners("/proc/self/net/tcp6", listening)
	readUnixListeners("/proc/self/net/unix", listening)
	if len(listening) == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var own []string
	for _, entry := range entries {
		target, err := os.Readlink("/proc/self/fd/" + entry.Name())
		if err != nil {
			continue
		}
		inode, ok := strings.CutPrefix(target, "socket:[")
		if !ok {
			continue
		}
		if socket, ok := listening[strings.TrimSuffix(inode, "]")]; ok {
			own = append(own, socket)
		}
	}
	return own
}

// readTCPListeners adds the sockets in LISTEN state (st 0A) of a /proc/net/tcp file, by inode:
// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`, the address
// as hexadecimal 32-bit words in host byte order, then the port.
func readTCPListeners(path string, into map[string]string) {
	file, err := os.Open(path)
	if err != nil {
		return
	}
	defer file.Close()
	lines := bufio.NewScanner(file)
	lines.Scan() // the header
	for lines.Scan() {
		fields := strings.Fields(lines.Text())
		if len(fields) < 10 || fields[3] != "0A" {
			continue
		}
		hexIP, hexPort, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		ip := procIP(hexIP)
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if ip == nil || err != nil {
			continue
		}
		into[fields[9]] = net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10))
	}
}

// procIP decodes /proc's address: 8 (IPv4) or 32 (IPv6) hex digits, the kernel printing each
// 32-bit word of the address (in network order in memory) as a native integer.
func procIP(text string) net.IP {
	if len(text) != 8 && len(text) != 32 {
		return nil
	}
	ip := make(net.IP, len(text)/2)
	for word := 0; word < len(text); word += 8 {
		value, err := strconv.ParseUint(text[word:word+8], 16, 32)
		if err != nil {
			return nil
		}
		binary.NativeEndian.PutUint32(ip[word/2:], uint32(value))
	}
	return ip
}

// readUnixListeners adds the listening Unix sockets with a path (flags 00010000, __SO_ACCEPTCON):
// `Num RefCount Protocol Flags Type St Inode Path`.
func readUnixListeners(path string, into map[string]string) {
	file, err := os.Open(path)
	if err != nil {
		return
	}
	defer file.Close()
	lines := bufio.NewScanner(file)
	lines.Scan()
	for lines.Scan() {
		fields := strings.Fields(lines.Text())
		if len(fields) < 8 || fields[3] != "00010000" || !strings.HasPrefix(fields[7], "/") {
			continue
		}
		into[fields[6]] = "unix/" + fields[7]
	}
}
