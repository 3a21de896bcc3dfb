// Command gen prints HGFS byte vectors made by govmomi's own encoders
// (toolbox/hgfs), one "name hex" line each, for the Rust codec's tests.
package main

import (
	"encoding/hex"
	"fmt"
	"os"

	"github.com/vmware/govmomi/toolbox/hgfs"
)

const session = 0x1122334455667788

func emit(name string, b []byte, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n", name, hex.EncodeToString(b))
}

func request(op int32, id uint32, payload any) *hgfs.Packet {
	body, err := hgfs.MarshalBinary(payload)
	if err != nil {
		fmt.Fprintf(os.Stderr, "op %d: %v\n", op, err)
		os.Exit(1)
	}
	p := &hgfs.Packet{Payload: body}
	p.Header = hgfs.Header{
		Version:    hgfs.HeaderVersion,
		Dummy:      hgfs.OpNewHeader,
		HeaderSize: uint32(len(mustHeader())),
		RequestID:  id,
		Op:         op,
		Flags:      hgfs.PacketFlagRequest,
		SessionID:  session,
	}
	return p
}

func mustHeader() []byte {
	b, _ := hgfs.MarshalBinary(hgfs.Header{})
	return b
}

func pair(name string, req *hgfs.Packet, reply any) {
	b, err := req.MarshalBinary()
	emit(name+"_request", b, err)
	r, err := req.Reply(reply, nil)
	emit(name+"_reply", r, err)
}

func name(path string) hgfs.FileName {
	var f hgfs.FileName
	f.FromString(path)
	return f
}

func nameV3(path string) hgfs.FileNameV3 {
	var f hgfs.FileNameV3
	f.FromString(path)
	return f
}

func main() {
	caps := []hgfs.Capability{{Op: hgfs.OpOpenV3, Flags: 1}, {Op: hgfs.OpReadV3, Flags: 1}}
	pair("create_session_v4",
		request(hgfs.OpCreateSessionV4, 1, &hgfs.RequestCreateSessionV4{MaxPacketSize: 0x7f800, Capabilities: caps}),
		&hgfs.ReplyCreateSessionV4{SessionID: session, NumCapabilities: 2, MaxPacketSize: hgfs.LargePacketMax, Flags: 1, Capabilities: caps})

	pair("destroy_session_v4",
		request(hgfs.OpDestroySessionV4, 2, &hgfs.RequestDestroySessionV4{}),
		&hgfs.ReplyDestroySessionV4{})

	pair("open",
		request(hgfs.OpOpen, 3, &hgfs.RequestOpen{OpenMode: hgfs.OpenModeReadOnly, OpenFlags: hgfs.Open, Permissions: 6, FileName: name("/etc/hostname")}),
		&hgfs.ReplyOpen{Handle: 5})

	pair("close",
		request(hgfs.OpClose, 4, &hgfs.RequestClose{Handle: 5}),
		&hgfs.ReplyClose{})

	pair("open_v3",
		request(hgfs.OpOpenV3, 5, &hgfs.RequestOpenV3{Mask: 0x83, OpenMode: hgfs.OpenModeWriteOnly, OpenFlags: hgfs.OpenCreateEmpty,
			OwnerPerms: 6, GroupPerms: 4, OtherPerms: 4, FileName: nameV3("/tmp/upload dir/file.bin")}),
		&hgfs.ReplyOpenV3{Handle: 9})

	pair("read_v3",
		request(hgfs.OpReadV3, 6, &hgfs.RequestReadV3{Handle: 9, Offset: 0x10000, RequiredSize: 61440}),
		&hgfs.ReplyReadV3{ActualSize: 11, Payload: []byte("hello world")})

	pair("write_v3",
		request(hgfs.OpWriteV3, 7, &hgfs.RequestWriteV3{Handle: 9, WriteFlags: 0, Offset: 61440, RequiredSize: 5, Payload: []byte("abcde")}),
		&hgfs.ReplyWriteV3{ActualSize: 5})

	pair("getattr_v2",
		request(hgfs.OpGetattrV2, 8, &hgfs.RequestGetattrV2{AttrHint: 0, Handle: 0, FileName: name("/var/log")}),
		&hgfs.ReplyGetattrV2{Attr: hgfs.AttrV2{
			Mask: hgfs.AttrValidType | hgfs.AttrValidSize | hgfs.AttrValidOwnerPerms | hgfs.AttrValidGroupPerms |
				hgfs.AttrValidOtherPerms | hgfs.AttrValidUserID | hgfs.AttrValidGroupID,
			Type: hgfs.FileTypeDirectory, Size: 4096, AccessTime: 1, WriteTime: 2, CreationTime: 2, AttrChangeTime: 3,
			OwnerPerms: 7, GroupPerms: 5, OtherPerms: 5, AllocationSize: 4096, UserID: 1000, GroupID: 100, HostFileID: 42, VolumeID: 7}})

	pair("setattr_v2",
		request(hgfs.OpSetattrV2, 9, &hgfs.RequestSetattrV2{Attr: hgfs.AttrV2{
			Mask: hgfs.AttrValidOwnerPerms | hgfs.AttrValidGroupPerms | hgfs.AttrValidOtherPerms | hgfs.AttrValidUserID | hgfs.AttrValidGroupID,
			OwnerPerms: 6, GroupPerms: 4, UserID: 1000, GroupID: 1000}, FileName: name("/tmp/file.bin")}),
		&hgfs.ReplySetattrV2{})

	stale := request(hgfs.OpReadV3, 10, &hgfs.RequestReadV3{Handle: 1, RequiredSize: 4096})
	b, err := stale.MarshalBinary()
	emit("stale_request", b, err)
	r, err := stale.Reply(nil, &hgfs.Status{Code: hgfs.StatusStaleSession})
	emit("stale_reply", r, err)
}
