// The Events API page decoder under libFuzzer (`make fuzz`), or, built normally, a replayer of the files named on
// the command line (a corpus, or a crash libFuzzer saved): either way each input goes through `check`, which traps
// only if the decoder returns an event the relay could not place.
import Foundation
import RelayCore

let decoders = [
    EventPageDecoder(),
    EventPageDecoder(overrides: ResponseShapeOverrides(eventsPath: "/events", idField: "event_id", timestampField: "receivedAt")),
]

func check(_ bytes: [UInt8]) {
    for decoder in decoders {
        guard let page = try? decoder.decode(bytes) else { continue }
        for event in page.events where !event.time.isPlaceable || event.id.isEmpty {
            fatalError("decoded an event with time \(event.time.millisecondsSinceEpoch) and id '\(event.id)'")
        }
        precondition(page.events.count + page.skipped.values.reduce(0, +) == page.elementCount)
        // What the poller does with every event next.
        for event in page.events { _ = event.time.iso8601 }
    }
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    check(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
})
#else
var inputs = 0
for path in CommandLine.arguments.dropFirst() {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        FileHandle.standardError.write(Data("decoder-fuzz: no such file: \(path)\n".utf8))
        exit(66)
    }
    let files = isDirectory.boolValue
        ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).map { path + "/" + $0 } : [path]
    for file in files {
        guard let data = FileManager.default.contents(atPath: file) else { continue }
        check(Array(data))
        inputs += 1
    }
}
print("decoder-fuzz: \(inputs) inputs decoded without a fault")
#endif
