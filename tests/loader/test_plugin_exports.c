/*
 * test_plugin_exports.c: every built method plugin (the arguments) loads with RTLD_NOW, so
 * no symbol is left undefined (meson never links a shared_module with --no-undefined), has
 * a well-formed entry, and exports exactly one symbol, `peft_plugin_entry`: anything else
 * would leak into the process's namespace and could clash between plugins.
 *
 * The exports are read from the file's ELF dynamic symbol table (.dynsym): defined symbols
 * with global or weak binding and default or protected visibility, except the ODR indicators
 * AddressSanitizer adds beside each global (__odr_asan.NAME).
 */
#include <dlfcn.h>
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peft/peft_plugin.h"

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
            fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = n > 0 ? (size_t)n : 0;
    }
    fclose(f);
    return buf;
}

/* Print every exported symbol of an ELF64 shared object; return how many there are and
 * whether the entry is among them (*has_entry), or -1 if the file is not readable ELF64. */
static int list_exports(const char *path, int *has_entry) {
    size_t len = 0;
    char *buf = read_file(path, &len);
    int n = -1;
    *has_entry = 0;
    if (!buf || len < sizeof(Elf64_Ehdr) || memcmp(buf, ELFMAG, SELFMAG) != 0 ||
        buf[EI_CLASS] != ELFCLASS64)
        goto done;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)buf;
    if (eh->e_shentsize != sizeof(Elf64_Shdr) || eh->e_shoff > len ||
        (len - eh->e_shoff) / sizeof(Elf64_Shdr) < eh->e_shnum)
        goto done;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(buf + eh->e_shoff);
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNSYM) continue;
        if (sh[i].sh_link >= eh->e_shnum || sh[i].sh_offset > len ||
            len - sh[i].sh_offset < sh[i].sh_size || sh[i].sh_entsize != sizeof(Elf64_Sym))
            goto done;
        const Elf64_Shdr *strs = &sh[sh[i].sh_link];
        if (strs->sh_offset > len || len - strs->sh_offset < strs->sh_size) goto done;
        const char *names = buf + strs->sh_offset;
        const Elf64_Sym *sym = (const Elf64_Sym *)(buf + sh[i].sh_offset);
        size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
        n = 0;
        for (size_t k = 1; k < count; k++) {
            int bind = ELF64_ST_BIND(sym[k].st_info);
            int vis = ELF64_ST_VISIBILITY(sym[k].st_other);
            if (sym[k].st_shndx == SHN_UNDEF) continue;
            if (bind != STB_GLOBAL && bind != STB_WEAK && bind != STB_GNU_UNIQUE) continue;
            if (vis != STV_DEFAULT && vis != STV_PROTECTED) continue;
            if (sym[k].st_name >= strs->sh_size) goto done;
            const char *name = names + sym[k].st_name;
            if (strncmp(name, "__odr_asan", 10) == 0) continue; /* AddressSanitizer's own */
            fputs("  export ", stdout);
            puts(name);
            if (strcmp(name, PEFT_PLUGIN_ENTRY_SYMBOL) == 0) *has_entry = 1;
            n++;
        }
        break;
    }
done:
    free(buf);
    return n;
}

int main(int argc, char **argv) {
    int failures = 0;
    if (argc < 2) {
        fprintf(stderr, "test_plugin_exports: no plugins given\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        /* An absolute path, so dlopen does not search the library path. */
        char *path = realpath(argv[i], NULL);
        if (!path) {
            fprintf(stderr, "FAIL %s: no such file\n", argv[i]);
            failures++;
            continue;
        }
        printf("%s\n", path);
        fflush(stdout);
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "FAIL %s: dlopen: %s\n", path, dlerror());
            failures++;
            free(path);
            continue;
        }
        const peft_plugin_entry_t *e = dlsym(h, PEFT_PLUGIN_ENTRY_SYMBOL);
        if (!e) {
            fprintf(stderr, "FAIL %s: no exported '%s'\n", path, PEFT_PLUGIN_ENTRY_SYMBOL);
            failures++;
        } else if (e->abi_version != PEFT_ABI_VERSION || e->struct_size != sizeof *e ||
                   e->method_count < 1 || !e->methods) {
            fprintf(stderr, "FAIL %s: entry abi %u size %u methods %u\n", path,
                    (unsigned)e->abi_version, (unsigned)e->struct_size,
                    (unsigned)e->method_count);
            failures++;
        } else {
            printf("  entry: ABI %u, %u method(s), first '%s'\n", (unsigned)e->abi_version,
                   (unsigned)e->method_count, e->methods[0] ? e->methods[0]->id : "(null)");
        }
        int has_entry;
        int n = list_exports(path, &has_entry);
        if (n != 1 || !has_entry) {
            fprintf(stderr, "FAIL %s: %d exported symbols, want only '%s'\n", path, n,
                    PEFT_PLUGIN_ENTRY_SYMBOL);
            failures++;
        }
        fflush(stdout);
        free(path); /* the handle is never dlclosed, as the host does */
    }
    printf("test_plugin_exports: %d plugin(s), %d failure(s)\n", argc - 1, failures);
    return failures ? 1 : 0;
}
