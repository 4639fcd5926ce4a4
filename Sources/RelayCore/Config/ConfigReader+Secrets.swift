import RelayJSON

extension ConfigReader {
    /// A secret: a string, or `{"env": NAME}`, `{"file": PATH}`, `{"credential": NAME}`, resolved now so that a
    /// missing variable or file is a config error at start-up, not a failed request later. Problems name the
    /// variable or file, never the value.
    mutating func secret(_ value: JSONValue, at path: ConfigPath) -> Secret? {
        if !environment.resolvesSecrets, value.stringValue != nil || value.objectValue != nil {
            return Secret("", origin: .literal)
        }
        switch value {
        case .string(let text):
            guard !text.isEmpty else {
                problem(path, "must not be empty")
                return nil
            }
            return Secret(text, origin: .literal)
        case .object:
            guard let fields = object(value, at: path, allowed: ["env", "file", "credential"]) else { return nil }
            guard fields.members.count == 1, let member = fields.members.first,
                ["env", "file", "credential"].contains(member.key)
            else {
                if fields.members.isEmpty || fields.members.count > 1 {
                    problem(path, "must have exactly one of \"env\", \"file\" or \"credential\"")
                }
                return nil
            }
            guard let reference = string(member.value, at: path.key(member.key)) else { return nil }
            switch member.key {
            case "env": return environmentSecret(reference, at: path)
            case "file": return fileSecret(path: reference, origin: .file(reference), at: path)
            default: return credentialSecret(reference, at: path)
            }
        default:
            problem(path, "must be a string or an object with \"env\", \"file\" or \"credential\", not \(value.typeName)")
            return nil
        }
    }

    mutating func secret(_ object: JSONObject, _ key: String, at path: ConfigPath, required: Bool = false) -> Secret? {
        guard let value = required ? self.required(object, key, at: path) : object[key] else { return nil }
        return secret(value, at: path.key(key))
    }

    private mutating func environmentSecret(_ name: String, at path: ConfigPath) -> Secret? {
        guard let value = environment.variables[name] else {
            problem(path, "environment variable \(name) is not set")
            return nil
        }
        guard !value.isEmpty else {
            problem(path, "environment variable \(name) is empty")
            return nil
        }
        return Secret(value, origin: .environment(name))
    }

    private mutating func credentialSecret(_ name: String, at path: ConfigPath) -> Secret? {
        guard !name.contains("/"), name != ".", name != ".." else {
            problem(path.key("credential"), "must be a credential name, not a path")
            return nil
        }
        guard let directory = environment.variables["CREDENTIALS_DIRECTORY"], !directory.isEmpty else {
            problem(path, "credential \(name) needs $CREDENTIALS_DIRECTORY (set by systemd's LoadCredential=), which is not set")
            return nil
        }
        return fileSecret(path: directory + "/" + name, origin: .credential(name), at: path)
    }

    private mutating func fileSecret(path file: String, origin: SecretOrigin, at path: ConfigPath) -> Secret? {
        let bytes: [UInt8]
        do {
            bytes = try environment.readFile(file)
        } catch {
            problem(path, "\(error)")
            return nil
        }
        var text = String(decoding: bytes, as: UTF8.self)
        // Files written by `echo` or an editor end in a newline that is not part of the secret.
        while text.last?.isNewline == true { text.removeLast() }
        guard !text.isEmpty else {
            problem(path, "\(file) is empty")
            return nil
        }
        return Secret(text, origin: origin)
    }
}
